"""NVIDIA StyleGAN2-ADA pickles: the safe loader, the conversion of live objects, the reference-ops switch.

No NVIDIA file or code is needed: fake ``torch_utils.persistence`` and ``dnnlib.util`` modules, put in
``sys.modules`` only while a pickle is written, make our own StyleGAN2Generator pickle as NVIDIA's networks
do (``persistent_class`` below follows the ``__reduce__`` of NVIDIA's torch_utils/persistence.py; tensors
and storages pickle through torch's own ``__reduce_ex__``).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import os
import pickle
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tangentlens.generators import (
    NvidiaPickleError,
    UnsupportedGeneratorError,
    convert_nvidia_generator,
    load_stylegan2_pkl,
    load_stylegan2_state_dict,
    nvidia_reference_ops,
)
from tangentlens.models import StyleGAN2Generator
from tangentlens.models.stylegan2 import FullyConnectedLayer

FAKE_MODULES = ("dnnlib", "dnnlib.util", "torch_utils", "torch_utils.persistence")
OURS = dict(z_dim=32, w_dim=32, img_resolution=16, channel_base=128, channel_max=32, conv_clamp=256)


def nvidia_kwargs(**synthesis: Any) -> dict[str, Any]:
    """NVIDIA's Generator kwargs for OURS (train.py's G_kwargs + the training loop's common_kwargs)."""
    syn = dict(channel_base=128, channel_max=32, num_fp16_res=4, conv_clamp=256, **synthesis)
    return dict(z_dim=32, w_dim=32, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=syn) | dict(
        c_dim=0, img_resolution=16, img_channels=3
    )


def small_generator(seed: int = 0, channels_last: bool = False) -> StyleGAN2Generator:
    G = StyleGAN2Generator(**OURS, seed=seed, synthesis_kwargs=dict(num_fp16_res=4)).eval()
    if channels_last:  # as NVIDIA may keep fp16 layers' weights: strided tensors in the pickle
        w = G.synthesis.b16.conv0.weight
        w.data = w.data.contiguous(memory_format=torch.channels_last)
    return G


class FakeNvidia:
    """NVIDIA's dnnlib.util.EasyDict and torch_utils.persistence, as far as pickling needs them."""

    def __init__(self, marker: Path) -> None:
        # If anything ever ran the pickled source, the marker file would appear.
        self.marker = marker
        self.module_src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\n"
        self.registry: dict[str, type] = {}  # class name -> persistent class, for the fake reconstruct
        self._classes: dict[tuple[type, str], type] = {}

        class EasyDict(dict):
            def __getattr__(self, name: str) -> Any:
                try:
                    return self[name]
                except KeyError as exc:
                    raise AttributeError(name) from exc

            def __setattr__(self, name: str, value: Any) -> None:
                self[name] = value

        EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
        self.EasyDict = EasyDict

        def _reconstruct_persistent_obj(meta: dict[str, Any]) -> Any:
            # NVIDIA's exec()s meta['module_src']; the fake (used by allow_unsafe_pickle) looks the class up.
            cls = self.registry[meta["class_name"]]
            obj = cls.__new__(cls)
            obj.__setstate__(dict(meta["state"]))
            return obj

        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
        self.reconstruct = _reconstruct_persistent_obj
        self.modules = {name: types.ModuleType(name) for name in FAKE_MODULES}
        self.modules["dnnlib.util"].EasyDict = EasyDict
        self.modules["dnnlib"].EasyDict = EasyDict
        self.modules["dnnlib"].util = self.modules["dnnlib.util"]
        self.modules["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
        self.modules["torch_utils"].persistence = self.modules["torch_utils.persistence"]

    def persistent_class(self, orig: type, name: str) -> type:
        if (orig, name) in self._classes:
            return self._classes[(orig, name)]
        reconstruct, module_src = self.reconstruct, self.module_src

        class Decorator(orig):
            _orig_module_src = module_src
            _orig_class_name = name

            def __reduce__(self):  # NVIDIA's torch_utils.persistence, verbatim in logic
                fields = list(super().__reduce__())
                fields += [None] * max(3 - len(fields), 0)
                if fields[0] is not reconstruct:
                    meta = dict(
                        type="class",
                        version=6,
                        module_src=self._orig_module_src,
                        class_name=self._orig_class_name,
                        state=fields[2],
                    )
                    fields[0] = reconstruct
                    fields[1] = (meta,)
                    fields[2] = None
                return tuple(fields)

        Decorator.__name__ = name
        self.registry[name] = self._classes[(orig, name)] = Decorator
        return Decorator

    def wrap(self, net: nn.Module, init_kwargs: dict[str, Any], name: str = "Generator") -> nn.Module:
        """Turn ``net`` and its non-torch.nn submodules into persistent objects, as NVIDIA builds them."""
        for m in net.modules():
            if type(m).__module__.startswith("torch.nn") or hasattr(m, "_orig_class_name"):
                continue  # a plain torch module stays plain (pickled with NEWOBJ / copyreg)
            m.__class__ = self.persistent_class(type(m), name if m is net else type(m).__name__)
            m._init_args = ()
            m._init_kwargs = self.EasyDict(copy.deepcopy(init_kwargs) if m is net else {})
            m.weight_gain_np = np.float64(np.sqrt(2))  # NVIDIA keeps some gains as numpy scalars
        return net

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = {name: sys.modules.get(name) for name in FAKE_MODULES}
        sys.modules.update(self.modules)
        try:
            yield
        finally:
            for name, mod in saved.items():
                if mod is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = mod


class Discriminator(nn.Module):
    """Stands in for NVIDIA's D: one plain torch.nn module, one persistent layer, a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = FullyConnectedLayer(4, 1)
        self.register_buffer("resample_filter", torch.ones(4, 4) / 16)


@pytest.fixture
def fake(tmp_path: Path) -> FakeNvidia:
    return FakeNvidia(tmp_path / "module_src_ran")


def write_pkl(
    path: Path, fake: FakeNvidia, protocol: int = pickle.DEFAULT_PROTOCOL, **entries: Any
) -> tuple[Path, dict[str, StyleGAN2Generator]]:
    """A StyleGAN2-ADA snapshot dict; returns pristine copies of the generators for comparison."""
    pristine = {k: copy.deepcopy(v) for k, v in entries.items() if isinstance(v, StyleGAN2Generator)}
    with fake.installed():
        data: dict[str, Any] = dict(
            G=entries.pop("G", None),
            D=fake.wrap(Discriminator(), dict(c_dim=0, img_resolution=16, img_channels=3), "Discriminator"),
            G_ema=entries.pop("G_ema", None),
            training_set_kwargs=fake.EasyDict(
                path="ffhq16.zip", resolution=16, use_labels=False, xflip=False
            ),
            augment_pipe=None,
        )
        for k in ("G", "G_ema"):
            if isinstance(data[k], StyleGAN2Generator):
                fake.wrap(data[k], nvidia_kwargs())
        data.update(entries)
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    return path, pristine


def assert_same_generator(a: StyleGAN2Generator, b: StyleGAN2Generator) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k
    z = torch.randn(3, a.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a(z, noise_mode="const"), b(z, noise_mode="const"))


def assert_nothing_imported(fake: FakeNvidia) -> None:
    assert not any(name in sys.modules for name in FAKE_MODULES)
    assert not any(name.startswith("_imported_module_") for name in sys.modules)
    assert not fake.marker.exists()


# ---------------------------------------------------------------------------------------------------------
# The safe loader


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_safe_load_reproduces_the_pickled_generator(tmp_path, fake, protocol):
    G0 = small_generator(0, channels_last=True)
    path, pristine = write_pkl(tmp_path / "net.pkl", fake, protocol, G_ema=G0)
    assert_nothing_imported(fake)  # the loader below sees no NVIDIA modules

    G = load_stylegan2_pkl(path)

    assert_nothing_imported(fake)  # nothing imported, module_src never ran
    assert type(G) is StyleGAN2Generator and not G.training
    assert not any(p.requires_grad for p in G.parameters())
    ref = pristine["G_ema"]
    for p in ref.parameters():  # the same values in our layout (a layout changes the rounding of a conv)
        p.data = p.data.contiguous()
    assert_same_generator(G, ref)


def test_pickled_source_is_never_run(tmp_path, fake):
    path, _ = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator())
    assert fake.module_src.encode() in path.read_bytes()  # NVIDIA's format carries the source along
    load_stylegan2_pkl(path)
    assert_nothing_imported(fake)
    exec(fake.module_src, {})  # what torch_utils.persistence would do: the marker shows it
    assert fake.marker.exists()


def test_options(tmp_path, fake):
    path, pristine = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator())
    G = load_stylegan2_pkl(path, impl="reference", device="cpu")
    assert G.synthesis.b8.conv0.impl == "reference" and G.mapping.fc0.impl == "reference"
    ref = pristine["G_ema"]
    sa, sb = G.state_dict(), ref.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sb)
    z = torch.randn(2, 32)
    with torch.no_grad():  # the native and reference ops round differently
        torch.testing.assert_close(G(z), ref(z), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="impl: expected 'auto', 'native' or 'reference', got 'cuda'"):
        load_stylegan2_pkl(path, impl="cuda")


def test_key_chooses_G_or_G_ema(tmp_path, fake):
    path, pristine = write_pkl(tmp_path / "net.pkl", fake, G=small_generator(1), G_ema=small_generator(2))
    assert_same_generator(load_stylegan2_pkl(path, key="G"), pristine["G"])
    assert_same_generator(load_stylegan2_pkl(path), pristine["G_ema"])
    with pytest.raises(KeyError, match=r"'G_avg' is not in net.pkl; its keys are \['D', 'G', 'G_ema'"):
        load_stylegan2_pkl(path, key="G_avg")
    with pytest.raises(UnsupportedGeneratorError, match="expected a StyleGAN2 Generator.*Discriminator"):
        load_stylegan2_pkl(path, key="D")


def test_storages_saved_on_a_gpu_load_on_the_cpu(tmp_path, fake, monkeypatch):
    # Rewrite each storage blob as torch.save writes it for a CUDA storage (type torch.cuda.FloatStorage,
    # location 'cuda:0'): how the files NVIDIA trains on GPUs are laid out.
    original = torch.storage.TypedStorage.__reduce__

    def as_if_cuda(self):
        fn, (blob,) = original(self)
        assert b"ctorch\nFloatStorage\n" in blob and b"X\x03\x00\x00\x00cpu" in blob
        blob = blob.replace(b"ctorch\nFloatStorage\n", b"ctorch.cuda\nFloatStorage\n")
        return fn, (blob.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"),)

    monkeypatch.setattr(torch.storage.TypedStorage, "__reduce__", as_if_cuda)
    path, pristine = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator(3))
    monkeypatch.undo()
    assert b"torch.cuda" in path.read_bytes()
    G = load_stylegan2_pkl(path, device="cpu")
    assert G.synthesis.b4.const.device.type == "cpu"
    assert_same_generator(G, pristine["G_ema"])


class Evil:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "make",
    [
        lambda m: (Evil(os.system, f"touch {m}"), f"{os.system.__module__}.system"),
        lambda m: (Evil(builtins.exec, f"open({str(m)!r}, 'w').close()"), "builtins.exec"),
        lambda m: (Evil(builtins.eval, f"open({str(m)!r}, 'w').close()"), "builtins.eval"),
        lambda m: (Evil(subprocess.Popen, ["touch", str(m)]), "subprocess.Popen"),
        lambda m: (Evil(builtins.__import__, "os"), "builtins.__import__"),
    ],
    ids=["os.system", "exec", "eval", "Popen", "import"],
)
def test_refuses_foreign_globals_without_running_them(tmp_path, fake, make):
    marker = tmp_path / "pwned"
    evil, name = make(marker)
    # Hidden after a valid network, as a file tampered with would hide it.
    path, _ = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator(), augment_pipe=evil)
    with pytest.raises(
        NvidiaPickleError,
        match=f"refused global {re.escape(name)}: .*not such a pickle or would need code execution",
    ):
        load_stylegan2_pkl(path)
    assert not marker.exists()
    with pytest.raises(ValueError):  # NvidiaPickleError is also a ValueError (and an UnpicklingError)
        load_stylegan2_pkl(path)


def test_refuses_code_inside_a_storage_blob(tmp_path):
    # torch.storage._load_from_bytes would torch.load(weights_only=False) this blob; ours refuses it.
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Evil(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Evil(torch.storage._load_from_bytes, blob)}))
    with pytest.raises(NvidiaPickleError, match="_load_from_bytes: not a loadable storage blob"):
        load_stylegan2_pkl(path)
    assert not marker.exists()


def test_build_cannot_alter_the_loaders_globals(tmp_path):
    from tangentlens.generators import nvidia

    defaults = nvidia._rebuild_tensor_v2.__defaults__
    # GLOBAL torch._utils._rebuild_tensor_v2; BUILD (None, {'__defaults__': (7,)}): setattr on the global.
    path = tmp_path / "x.pkl"
    path.write_bytes(
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__K\x07\x85s\x86b."
    )
    with pytest.raises(NvidiaPickleError, match="expected a pickled dict"):
        load_stylegan2_pkl(path)
    assert nvidia._rebuild_tensor_v2.__defaults__ == defaults
    # BUILD on one of our stand-in classes calls its __setstate__ unbound: refused.
    path.write_bytes(b"\x80\x02cdnnlib.util\nEasyDict\nN}X\x0c\x00\x00\x00__setstate__K\x07s\x86b.")
    with pytest.raises(NvidiaPickleError, match="not a readable StyleGAN2-ADA pickle"):
        load_stylegan2_pkl(path)
    assert nvidia._EasyDict.__setstate__ is not None and "__setstate__" in vars(nvidia._EasyDict)


def test_refuses_files_that_are_not_stylegan2_ada_pickles(tmp_path, fake):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(NvidiaPickleError, match="expected a pickled dict with keys"):
        load_stylegan2_pkl(path)
    path.write_bytes(pickle.dumps({"G_ema": 3}))
    with pytest.raises(NvidiaPickleError, match=r"x.pkl\['G_ema'\]: expected a pickled network, got int"):
        load_stylegan2_pkl(path)
    good, _ = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator())
    path.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(NvidiaPickleError, match="not a readable StyleGAN2-ADA pickle"):
        load_stylegan2_pkl(path)
    # A legacy TensorFlow pickle names dnnlib.tflib classes.
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(NvidiaPickleError, match="refused global dnnlib.tflib.network.Network"):
        load_stylegan2_pkl(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_stylegan2_pkl(tmp_path / "missing.pkl")


def _stylegan3_like(fake: FakeNvidia) -> nn.Module:
    # NVIDIA's StyleGAN3 Generator: the same class name and mapping, another synthesis network.
    SynthesisInput = type("SynthesisInput", (nn.Module,), {})
    SynthesisLayer = type("SynthesisLayer", (nn.Module,), {})
    syn = type("SynthesisNetwork", (nn.Module,), {})()
    syn.input, syn.L0_36_512 = SynthesisInput(), SynthesisLayer()
    syn.L0_36_512.weight = nn.Parameter(torch.ones(2, 2))
    G = type("Generator", (nn.Module,), {})()
    G.mapping, G.synthesis = type("MappingNetwork", (nn.Module,), {})(), syn
    return fake.wrap(G, nvidia_kwargs())


def test_refuses_stylegan3_and_other_generators(tmp_path, fake):
    path, _ = write_pkl(tmp_path / "sg3.pkl", fake, G_ema=_stylegan3_like(fake))
    with pytest.raises(
        UnsupportedGeneratorError, match=r"this is a StyleGAN3 generator .*\['L0_36_512', 'input'\]"
    ):
        load_stylegan2_pkl(path)

    path, _ = write_pkl(tmp_path / "fork.pkl", fake, G_ema=fake.wrap(small_generator(), {}, "GeneratorV2"))
    with pytest.raises(UnsupportedGeneratorError, match="expected a StyleGAN2 Generator.*got GeneratorV2"):
        load_stylegan2_pkl(path)

    other = type("TriPlaneGenerator", (nn.Module,), {})()  # EG3D: a StyleGAN2 backbone inside
    other.backbone = small_generator()
    path, _ = write_pkl(tmp_path / "eg3d.pkl", fake, G_ema=fake.wrap(other, {}, "TriPlaneGenerator"))
    with pytest.raises(UnsupportedGeneratorError, match="got TriPlaneGenerator with children {'backbone'"):
        load_stylegan2_pkl(path)


def test_refuses_constructor_arguments_it_cannot_reproduce(tmp_path, fake):
    G = small_generator()
    with fake.installed():
        fake.wrap(G, nvidia_kwargs(architecture="fancy", magic=3))
    path = tmp_path / "net.pkl"
    with fake.installed():
        path.write_bytes(pickle.dumps({"G_ema": G}))
    with pytest.raises(
        UnsupportedGeneratorError, match=r"synthesis_kwargs\['magic'\]=3, architecture='fancy'"
    ):
        load_stylegan2_pkl(path)


def test_strict_load_lists_missing_and_unexpected_tensors(tmp_path, fake):
    G = small_generator()
    del G.synthesis.b8.conv0.noise_strength  # a tensor the pickle lacks
    G.mapping.register_buffer("extra", torch.zeros(2))
    path, _ = write_pkl(tmp_path / "net.pkl", fake, G_ema=G)
    with pytest.raises(UnsupportedGeneratorError) as err:
        load_stylegan2_pkl(path)
    msg = str(err.value)
    assert "missing ['synthesis.b8.conv0.noise_strength'] (1)" in msg
    assert "unexpected ['mapping.extra'] (1)" in msg


def test_unsafe_pickle_opt_in(tmp_path, fake):
    path, pristine = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator(4))
    with pytest.raises(ModuleNotFoundError, match="allow_unsafe_pickle=True unpickles with NVIDIA's code"):
        load_stylegan2_pkl(path, allow_unsafe_pickle=True)
    with fake.installed():  # what NVIDIA's dnnlib / torch_utils on sys.path would provide
        G = load_stylegan2_pkl(path, allow_unsafe_pickle=True)
    assert type(G) is StyleGAN2Generator and not G.training
    assert_same_generator(G, pristine["G_ema"])


# ---------------------------------------------------------------------------------------------------------
# Live NVIDIA-like objects and plain state dicts


@pytest.mark.parametrize("architecture", ["orig", "skip", "resnet"])
def test_convert_nvidia_generator(architecture):
    ours = dict(z_dim=16, c_dim=3, w_dim=24, img_resolution=8, img_channels=3)
    G = StyleGAN2Generator(
        **ours,
        channel_base=64,
        channel_max=16,
        mapping_layers=2,
        seed=5,
        mapping_kwargs=dict(lr_multiplier=0.1),
        synthesis_kwargs=dict(architecture=architecture),
    )
    G.init_kwargs = dict(  # the property NVIDIA's persistent classes have
        ours,
        mapping_kwargs=dict(num_layers=2, lr_multiplier=0.1),
        synthesis_kwargs=dict(
            channel_base=64, channel_max=16, architecture=architecture, fp16_channels_last=False
        ),
    )
    H = convert_nvidia_generator(G)
    assert H is not G and not H.training
    sa, sb = G.state_dict(), H.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and list(sa) == list(sb)
    z, c = torch.randn(2, 16), torch.eye(3)[:2]
    with torch.no_grad():
        assert torch.equal(G(z, c), H(z, c))


def test_convert_takes_stylegan3_repos_flat_synthesis_kwargs():
    G = small_generator(6)
    # stylegan3's training/networks_stylegan2.Generator(..., mapping_kwargs={}, **synthesis_kwargs)
    G._init_args = (32, 0, 32, 16, 3)
    G._init_kwargs = dict(
        mapping_kwargs=dict(num_layers=8),
        channel_base=128,
        channel_max=32,
        num_fp16_res=4,
        conv_clamp=256,
        fused_modconv_default="inference_only",
    )
    assert_same_generator(convert_nvidia_generator(G), G)


def test_convert_refuses_what_it_cannot_match(fake):
    with pytest.raises(TypeError, match="G: expected an NVIDIA Generator"):
        convert_nvidia_generator(object())
    with pytest.raises(UnsupportedGeneratorError, match="has no init_kwargs / _init_kwargs"):
        convert_nvidia_generator(small_generator())
    G = small_generator()
    G.init_kwargs = nvidia_kwargs(channels_per_res=3)
    with pytest.raises(UnsupportedGeneratorError, match=r"synthesis_kwargs\['channels_per_res'\]=3"):
        convert_nvidia_generator(G)
    G.init_kwargs = nvidia_kwargs() | dict(mapping_kwargs=dict(num_layers=8, mlp="deep"))
    with pytest.raises(UnsupportedGeneratorError, match=r"mapping_kwargs\['mlp'\]='deep'"):
        convert_nvidia_generator(G)
    with pytest.raises(UnsupportedGeneratorError, match="StyleGAN3 generator"):
        convert_nvidia_generator(_stylegan3_like(fake))


def test_load_stylegan2_state_dict(tmp_path):
    G = small_generator(7)
    torch.save(G.state_dict(), tmp_path / "sd.pt")
    kwargs = dict(OURS, synthesis_kwargs=dict(num_fp16_res=4))
    assert_same_generator(load_stylegan2_state_dict(tmp_path / "sd.pt", **kwargs), G)
    assert_same_generator(load_stylegan2_state_dict(G.state_dict(), **kwargs), G)
    with pytest.raises(UnsupportedGeneratorError, match="shape mismatches"):
        load_stylegan2_state_dict(G.state_dict(), **(kwargs | dict(channel_max=16)))


# ---------------------------------------------------------------------------------------------------------
# NVIDIA's custom ops switched to their reference paths


class _NoForwardAD(torch.autograd.Function):
    """Like NVIDIA's CUDA ops: an autograd.Function without a jvp rule."""

    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


def _op_like_nvidia(mod: types.ModuleType):
    def run(x, impl="cuda"):  # the decision NVIDIA's bias_act / upfirdn2d / filtered_lrelu make
        return _NoForwardAD.apply(x) if impl == "cuda" and mod._init() else x * 2

    return run


def _fake_ops(monkeypatch, package: str = "torch_utils") -> dict[str, types.ModuleType]:
    mods = {}
    for op in ("bias_act", "upfirdn2d", "filtered_lrelu"):
        mods[op] = mod = types.ModuleType(f"{package}.ops.{op}")
        mod._init = lambda: True  # NVIDIA's: whether the CUDA plugin built
        mod.run = _op_like_nvidia(mod)
    for op in ("conv2d_gradfix", "grid_sample_gradfix"):
        mods[op] = types.ModuleType(f"{package}.ops.{op}")
        mods[op].enabled = True
    mods["fma"] = types.ModuleType(f"{package}.ops.fma")
    mods["fma"].fma = lambda a, b, c: _NoForwardAD.apply(a) * b / 2 + c
    for mod in mods.values():
        monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return mods


def test_nvidia_reference_ops_switches_and_restores(monkeypatch):
    mods = _fake_ops(monkeypatch)
    x, t = torch.randn(3), torch.randn(3)
    with pytest.raises(RuntimeError):  # what PPL hits with NVIDIA's CUDA ops on
        torch.func.jvp(mods["bias_act"].run, (x,), (t,))
    inits = {op: mods[op]._init for op in ("bias_act", "upfirdn2d", "filtered_lrelu")}
    fma = mods["fma"].fma

    with nvidia_reference_ops() as switched:
        assert switched == [
            "torch_utils.ops.bias_act._init: returns False (reference path)",
            "torch_utils.ops.conv2d_gradfix.enabled: True -> False",
            "torch_utils.ops.filtered_lrelu._init: returns False (reference path)",
            "torch_utils.ops.fma.fma: torch.addcmul",
            "torch_utils.ops.grid_sample_gradfix.enabled: True -> False",
            "torch_utils.ops.upfirdn2d._init: returns False (reference path)",
        ]
        for op in inits:
            y, ty = torch.func.jvp(mods[op].run, (x,), (t,))
            assert torch.equal(y, 2 * x) and torch.equal(ty, 2 * t)
        assert not mods["conv2d_gradfix"].enabled and not mods["grid_sample_gradfix"].enabled
        a, b, c = torch.randn(3), torch.randn(3), torch.randn(3)
        assert torch.equal(mods["fma"].fma(a, b, c), torch.addcmul(c, a, b))
        torch.func.jvp(lambda v: mods["fma"].fma(v, b, c), (a,), (t,))

    assert all(mods[op]._init is f for op, f in inits.items()) and mods["fma"].fma is fma
    assert mods["conv2d_gradfix"].enabled and mods["grid_sample_gradfix"].enabled

    with pytest.raises(KeyError), nvidia_reference_ops():  # restored on exceptions too
        raise KeyError("inside")
    assert all(mods[op]._init is f for op, f in inits.items()) and mods["conv2d_gradfix"].enabled


def test_nvidia_reference_ops_finds_modules_through_the_network(monkeypatch):
    # NVIDIA's code imported under another package name, reachable from the network's class module only.
    ops = _fake_ops(monkeypatch, package="vendored.stylegan")
    for mod in ops.values():
        monkeypatch.delitem(sys.modules, mod.__name__)
    nets = types.ModuleType("vendored.stylegan.training.networks")
    nets.bias_act = ops["bias_act"]
    monkeypatch.setitem(sys.modules, nets.__name__, nets)
    Net = type("SynthesisLayer", (nn.Module,), {"__module__": nets.__name__})
    G = nn.Sequential(Net())
    with nvidia_reference_ops(G) as switched:
        assert switched == ["vendored.stylegan.ops.bias_act._init: returns False (reference path)"]
        assert not ops["bias_act"]._init()
    assert ops["bias_act"]._init()
    with nvidia_reference_ops() as switched:  # without the network: not found, nothing switched
        assert switched == []
