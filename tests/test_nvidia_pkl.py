"""NVIDIA StyleGAN2(-ADA) and StyleGAN3 pickles: the safe loader, the conversion of live objects, the
reference-ops switch.

No NVIDIA file or code is needed: fake ``torch_utils.persistence`` and ``dnnlib.util`` modules, put in
``sys.modules`` only while a pickle is written, make our own StyleGAN2Generator / StyleGAN3Generator pickle as
NVIDIA's networks do (``persistent_class`` below follows the ``__reduce__`` of NVIDIA's
torch_utils/persistence.py; tensors, storages and numpy values pickle through torch's and numpy's own
``__reduce_ex__``).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import json
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
    load_nvidia_pkl,
    load_stylegan2_pkl,
    load_stylegan2_state_dict,
    nvidia_reference_ops,
    stylegan3_convert,
)
from tangentlens.models import StyleGAN2Generator, StyleGAN3Generator
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
        # A source laid out as NVIDIA's (imports, decorated classes, methods): importing it defines classes.
        self.module_src = (
            '"""Network architectures."""\n\nimport numpy as np\nimport torch\n'
            "from torch_utils import persistence\n\n\n"
            "@persistence.persistent_class\nclass Generator(torch.nn.Module):\n"
            "    def __init__(self, z_dim, c_dim, mapping_kwargs={}, resample_filter=[1, 3, 3, 1],\n"
            "                 gain=2**0.5):\n"
            "        super().__init__()\n        self.z_dim = z_dim\n"
        )
        # Code appended to it, as a tampered file would carry: if anything ever ran it, the marker appears.
        self.marker = marker
        self.payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('module_src ran')\n"
        self.tampered = False
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
        self.modules["torch_utils.persistence"].persistent_class = lambda cls: cls  # for exec'ing the source
        self.modules["torch_utils"].persistence = self.modules["torch_utils.persistence"]

    def persistent_class(self, orig: type, name: str) -> type:
        if (orig, name) in self._classes:
            return self._classes[(orig, name)]
        reconstruct, fake = self.reconstruct, self

        class Decorator(orig):
            _orig_class_name = name

            @property
            def _orig_module_src(self) -> str:  # read when pickling, so a test can tamper with it
                return fake.module_src + (fake.payload if fake.tampered else "")

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

    def wrap(
        self, net: nn.Module, init_kwargs: dict[str, Any], name: str = "Generator", easydict: bool = True
    ) -> nn.Module:
        """Turn ``net`` and its non-torch.nn submodules into persistent objects, as NVIDIA builds them."""
        for m in net.modules():
            if type(m).__module__.startswith("torch.nn") or hasattr(m, "_orig_class_name"):
                continue  # a plain torch module stays plain (pickled with NEWOBJ / copyreg)
            m.__class__ = self.persistent_class(type(m), name if m is net else type(m).__name__)
            m._init_args = ()
            kwargs = copy.deepcopy(init_kwargs) if m is net else {}
            m._init_kwargs = self.EasyDict(kwargs) if easydict else kwargs
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


def test_pickled_source_is_never_run_and_tampered_source_is_refused(tmp_path, fake):
    path, _ = write_pkl(tmp_path / "net.pkl", fake, G_ema=small_generator())
    assert fake.module_src.encode() in path.read_bytes()  # NVIDIA's format carries the source along
    load_stylegan2_pkl(path)  # a source that only defines classes is accepted (parsed, never run)
    assert_nothing_imported(fake)
    fake.tampered = True  # code appended to the source: refused, never run
    path, _ = write_pkl(tmp_path / "tampered.pkl", fake, G_ema=small_generator())
    with pytest.raises(
        NvidiaPickleError,
        match=r"would run code when imported \(module_src line 15: a top-level Expr statement\)",
    ):
        load_stylegan2_pkl(path)
    assert_nothing_imported(fake)
    with fake.installed():  # what torch_utils.persistence would do: the marker shows the payload is real
        exec(fake.module_src + fake.payload, {})
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
    with pytest.raises(
        UnsupportedGeneratorError, match="expected a StyleGAN2 or StyleGAN3 Generator.*Discriminator"
    ):
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
    from tangentlens.generators import unpickle as nvidia

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
    with pytest.raises(NvidiaPickleError, match="not a readable NVIDIA network pickle"):
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
    with pytest.raises(
        NvidiaPickleError, match="a StyleGAN2 pickle .*: not a readable NVIDIA network pickle"
    ):
        load_stylegan2_pkl(path)
    # A legacy TensorFlow pickle names dnnlib.tflib classes: the family first, then the refusal.
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    with pytest.raises(
        NvidiaPickleError,
        match=r"x.pkl: a legacy TensorFlow StyleGAN/StyleGAN2 pickle \(dnnlib.tflib; convert it with "
        r"NVIDIA's legacy.py first\): refused global dnnlib.tflib.network.Network",
    ):
        load_stylegan2_pkl(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_stylegan2_pkl(tmp_path / "missing.pkl")


def _stylegan3_like(fake: FakeNvidia, extra: bool = False) -> nn.Module:
    # A StyleGAN3 layout (input + L<i>_<size>_<channels> layers) whose tensors are not a StyleGAN3's.
    SynthesisInput = type("SynthesisInput", (nn.Module,), {})
    SynthesisLayer = type("SynthesisLayer", (nn.Module,), {})
    syn = type("SynthesisNetwork", (nn.Module,), {})()
    syn.input, syn.L0_36_512 = SynthesisInput(), SynthesisLayer()
    syn.L0_36_512.weight = nn.Parameter(torch.ones(2, 2))
    if extra:
        syn.skip = nn.Conv2d(1, 1, 1)
    G = type("Generator", (nn.Module,), {})()
    G.mapping, G.synthesis = type("MappingNetwork", (nn.Module,), {})(), syn
    return fake.wrap(G, nvidia_kwargs())


def test_refuses_other_generators_naming_their_family(tmp_path, fake):
    path, _ = write_pkl(tmp_path / "sg3.pkl", fake, G_ema=_stylegan3_like(fake))
    with pytest.raises(
        UnsupportedGeneratorError,
        match=r"sg3.pkl\['G_ema'\]: a StyleGAN3 pickle .*: the tensors do not match a StyleGAN3Generator",
    ):
        load_stylegan2_pkl(path)
    path, _ = write_pkl(tmp_path / "sg3x.pkl", fake, G_ema=_stylegan3_like(fake, extra=True))
    with pytest.raises(UnsupportedGeneratorError, match=r"expected a StyleGAN3 Generator .*'skip': 'Conv2d'"):
        load_stylegan2_pkl(path)

    path, _ = write_pkl(tmp_path / "fork.pkl", fake, G_ema=fake.wrap(small_generator(), {}, "GeneratorV2"))
    with pytest.raises(
        UnsupportedGeneratorError, match="expected a StyleGAN2 or StyleGAN3 Generator.*got GeneratorV2"
    ):
        load_stylegan2_pkl(path)

    other = type("TriPlaneGenerator", (nn.Module,), {})()  # EG3D: a StyleGAN2 backbone inside
    other.backbone = small_generator()
    path, _ = write_pkl(tmp_path / "eg3d.pkl", fake, G_ema=fake.wrap(other, {}, "TriPlaneGenerator"))
    with pytest.raises(UnsupportedGeneratorError) as err:
        load_stylegan2_pkl(path)
    assert str(err.value).startswith("eg3d.pkl['G_ema']: an EG3D pickle (NVlabs/eg3d TriPlaneGenerator): ")
    assert "got TriPlaneGenerator with children {'backbone'" in str(err.value)


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
    with pytest.raises(UnsupportedGeneratorError, match="the tensors do not match a StyleGAN3Generator"):
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
# StyleGAN3 pickles (stylegan3's training/networks_stylegan3.py), and the resample_filter fix of StyleGAN2

SG3_FIXTURES = Path(__file__).parent / "fixtures" / "stylegan3"
PROVENANCE = json.loads((SG3_FIXTURES / "provenance.json").read_text())


def sg3_nvidia_kwargs(config: str = "stylegan3-t", c_dim: int = 3) -> dict[str, Any]:
    """What train.py and the training loop pass to networks_stylegan3.Generator (R: 1x1, radial filters)."""
    kw = dict(
        z_dim=8, w_dim=8, c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=128, channel_max=8
    )
    kw |= dict(mapping_kwargs=dict(num_layers=2), magnitude_ema_beta=0.5 ** (32 / 20000), conv_clamp=256)
    if config == "stylegan3-r":
        kw |= dict(conv_kernel=1, use_radial_filters=True)
    return kw


def small_sg3(config: str = "stylegan3-t", c_dim: int = 3, seed: int = 0) -> StyleGAN3Generator:
    G = StyleGAN3Generator(
        z_dim=8,
        c_dim=c_dim,
        w_dim=8,
        img_resolution=16,
        config=config,
        channel_base=128,
        channel_max=8,
        seed=seed,
        synthesis_kwargs=dict(magnitude_ema_beta=0.5 ** (32 / 20000)),
    )
    with torch.no_grad():  # trained-like: a non-identity input transform, magnitudes away from 1
        G.synthesis.input.affine.weight.normal_(generator=torch.Generator().manual_seed(seed))
        for name, b in G.named_buffers():
            if name.endswith("magnitude_ema"):
                b.fill_(0.7)
    return G.eval()


def as_nvidia_values(G: nn.Module) -> nn.Module:
    """The attribute types NVIDIA's objects carry (provenance.json): sizes as (broadcast) numpy int arrays,
    rates, cutoffs and gains as numpy float64 scalars, flags as numpy bools."""
    for m in G.modules():
        kind = type(m).__name__
        if kind == "SynthesisInput":
            m.size = np.broadcast_to(np.asarray(m.size[0]), [2])
            m.sampling_rate, m.bandwidth = np.float64(m.sampling_rate), np.float64(m.bandwidth)
        elif kind == "SynthesisLayer":
            m.in_size = np.broadcast_to(np.asarray(m.in_size[0]), [2])
            m.out_size = np.broadcast_to(np.asarray(m.out_size[0]), [2])
            for a in ("in_cutoff", "out_cutoff", "in_half_width", "out_half_width"):
                setattr(m, a, np.float64(getattr(m, a)))
            m.use_fp16 = np.bool_(m.use_fp16)
        elif kind == "FullyConnectedLayer":
            m.weight_gain = np.float64(m.weight_gain)
    return G


def write_sg3_pkl(
    path: Path, fake: FakeNvidia, G: nn.Module, nvidia_kw: dict[str, Any], protocol: int = 4, **extra: Any
) -> Path:
    """A stylegan3 training snapshot as training_loop.py writes it (plain-dict init kwargs, D persistent)."""
    with fake.installed():
        G = as_nvidia_values(fake.wrap(G, nvidia_kw, easydict=False))
        D = type("Discriminator", (nn.Module,), {})()
        D.b16 = FullyConnectedLayer(4, 1)
        D = fake.wrap(
            D, dict(c_dim=nvidia_kw["c_dim"], img_resolution=16, img_channels=3), "Discriminator", False
        )
        # G is G_ema here: a deep copy would run a test's payload while writing
        data = dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=dict(path="x.zip"))
        data.update(extra)
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=protocol)
    return path


def assert_same_sg3(a: StyleGAN3Generator, b: StyleGAN3Generator) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    z = torch.randn(2, a.z_dim, generator=torch.Generator().manual_seed(1))
    c = torch.eye(a.c_dim)[:2] if a.c_dim else None
    with torch.no_grad():
        assert torch.equal(a(z, c, truncation_psi=0.7), b(z, c, truncation_psi=0.7))


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("config", ["stylegan3-t", "stylegan3-r"])
def test_stylegan3_pickles_load_without_running_code(tmp_path, fake, config, protocol):
    G0 = small_sg3(config)
    pristine = copy.deepcopy(G0)
    path = write_sg3_pkl(tmp_path / "sg3.pkl", fake, G0, sg3_nvidia_kwargs(config), protocol)
    assert_nothing_imported(fake)
    G = load_nvidia_pkl(path)
    assert_nothing_imported(fake)
    assert type(G) is StyleGAN3Generator and not G.training and G.config == "stylegan3-t"  # explicit kwargs
    assert G.synthesis.layers()[0].conv_kernel == (1 if config == "stylegan3-r" else 3)
    assert_same_sg3(G, pristine)
    assert_same_sg3(load_stylegan2_pkl(path, key="G"), pristine)  # the old name is the same loader


def test_stylegan3_pickle_uses_exactly_nvidias_globals(tmp_path, fake, monkeypatch):
    from tangentlens.generators import unpickle

    path = write_sg3_pkl(
        tmp_path / "sg3.pkl", fake, small_sg3("stylegan3-r"), sg3_nvidia_kwargs("stylegan3-r")
    )
    seen: set[str] = set()
    find = unpickle._RestrictedUnpickler.find_class

    def record(self, module, name):
        seen.add(f"{module}.{name}")
        return find(self, module, name)

    monkeypatch.setattr(unpickle._RestrictedUnpickler, "find_class", record)
    load_nvidia_pkl(path)
    assert sorted(seen) == PROVENANCE["nvidia_training_pickle_globals"]


@pytest.mark.parametrize("name", ["t32c", "r16c"])
def test_stylegan3_pickle_of_nvidias_network_gives_nvidias_images(tmp_path, fake, name):
    """The fixture's weights (NVIDIA's G_ema) written in NVIDIA's format, loaded, vs NVIDIA's images."""
    fx = torch.load(SG3_FIXTURES / f"{name}.pt", weights_only=True)
    kw = stylegan3_convert.generator_kwargs((), fx["nvidia_kwargs"], {}, "fixture")
    G = StyleGAN3Generator(**kw, seed=9)
    G.load_state_dict(fx["state_dict"])
    G = load_nvidia_pkl(write_sg3_pkl(tmp_path / f"{name}.pkl", fake, G, dict(fx["nvidia_kwargs"]))).double()
    with torch.no_grad():
        img = G(
            fx["z"], fx["c"], truncation_psi=fx["truncation_psi"], truncation_cutoff=fx["truncation_cutoff"]
        )
    assert float((img - fx["img64"]).abs().max() / fx["img64"].abs().max()) <= 1e-12


def _payload_sites(marker: Path) -> dict[str, Any]:
    evil = Evil(os.system, f"touch {marker}")
    return {
        "augment_pipe": dict(augment_pipe=evil),
        "training_set_kwargs": dict(training_set_kwargs=dict(path="x.zip", hook=evil)),
        "layer attribute": dict(layer=evil),
        "numpy dtype": dict(layer=Evil(np.dtype, "O")),
    }


@pytest.mark.parametrize("site", ["augment_pipe", "training_set_kwargs", "layer attribute", "numpy dtype"])
def test_stylegan3_payloads_are_refused_and_never_run(tmp_path, fake, site):
    marker = tmp_path / "pwned"
    extra = _payload_sites(marker)[site]
    G = small_sg3()
    if "layer" in extra:  # hidden inside the network's state, next to NVIDIA's numpy values
        G.synthesis.layers()[2].payload = extra.pop("layer")
    path = write_sg3_pkl(tmp_path / "sg3.pkl", fake, G, sg3_nvidia_kwargs(), **extra)
    assert not marker.exists()
    with pytest.raises(NvidiaPickleError) as err:
        load_nvidia_pkl(path)
    message = str(err.value)
    assert not marker.exists()
    family = "a StyleGAN3 pickle (NVlabs/stylegan3, training/networks_stylegan3.py): "
    assert family in message
    if "allow_unsafe_pickle" in message:  # the family is named before the opt-in is mentioned
        assert message.index(family) < message.index("allow_unsafe_pickle")
    assert "refused global posix.system" in message or "numpy.dtype: only numeric dtypes" in message


def test_stylegan3_tampered_source_is_refused_and_never_run(tmp_path, fake):
    fake.tampered = True
    path = write_sg3_pkl(
        tmp_path / "sg3.pkl", fake, small_sg3("stylegan3-r"), sg3_nvidia_kwargs("stylegan3-r")
    )
    with pytest.raises(NvidiaPickleError, match="the source pickled with it would run code when imported"):
        load_nvidia_pkl(path)
    assert not fake.marker.exists()
    with pytest.raises(NvidiaPickleError, match="would run code"):
        load_nvidia_pkl(path, key="G")
    assert not fake.marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        "x = os.system('touch x')\n",
        "class A:\n    y = open('x')\n",
        "@evil()\nclass A:\n    pass\n",
        "@hook\ndef f():\n    pass\n",
        "def f(a=print(1)):\n    pass\n",
        "def f(x: print(1)):\n    pass\n",
        "class A(metaclass=M):\n    pass\n",
        "class A(B(1)):\n    pass\n",
        "if True:\n    pass\n",
        "[x for x in range(3)]\n",
        "x = (y := 3)\n",
        "def f(:\n",
    ],
)
def test_pickled_sources_that_would_run_code_at_import_are_refused(source):
    from tangentlens.generators.unpickle import check_module_source

    with pytest.raises(NvidiaPickleError, match="the source pickled with it would run code when imported"):
        check_module_source(source, "Generator")


def test_pickled_sources_that_only_define_are_accepted():
    from tangentlens.generators.unpickle import check_module_source

    check_module_source(
        '"""doc"""\nimport torch\nfrom torch_utils import persistence, misc\n'
        'WAVELETS = {"haar": [0.7, 0.7]}\n\n'
        "@misc.profiled_function\ndef f(x, gain=2**0.5, pad=-1, kw={}):\n"
        "    return os.system(x)  # not run\n\n"
        "@persistence.persistent_class\nclass A(torch.nn.Module):\n    x: int\n    pass\n"
        "    @staticmethod\n    def g(a=(1, 2)):\n        return eval(a)\n",
        "A",
    )


@pytest.mark.parametrize(
    "value",
    [
        np.arange(6.0).reshape(2, 3),  # protocol 5: numpy._core.numeric._frombuffer
        np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        np.broadcast_to(np.asarray(36), [2]),
        np.array([1 + 2j, 3j], dtype=">c16"),
        np.array([True, False]),
        np.float64(0.5),
    ],
)
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_values_are_rebuilt_as_data(tmp_path, value, protocol):
    from tangentlens.generators.unpickle import plain, read_pickle

    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"value": value}, protocol=protocol))
    got = plain(read_pickle(path, None))["value"]
    assert type(got) is (np.ndarray if isinstance(value, np.ndarray) else float)
    np.testing.assert_array_equal(got, value)
    assert not isinstance(got, np.ndarray) or (got.dtype == value.dtype and got.flags.writeable)


def test_numpy_values_that_are_not_plain_data_are_refused(tmp_path):
    from tangentlens.generators.unpickle import read_pickle

    path = tmp_path / "x.pkl"
    for value, message in (
        (np.array([object(), 1], dtype=object), "numpy.dtype: only numeric dtypes are read, got 'O8'"),
        (np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), "numpy.dtype: only numeric dtypes"),
        (np.array(["ab"]), "numpy.dtype: only numeric dtypes"),
    ):
        path.write_bytes(pickle.dumps({"value": value}, protocol=4))
        with pytest.raises(NvidiaPickleError, match=re.escape(message)):
            read_pickle(path, None)
    # A shape that does not match the bytes, and an array beyond the size NVIDIA's attributes have.
    good = pickle.dumps(np.arange(4.0), protocol=2)
    path.write_bytes(good.replace(b"K\x04\x85", b"K\x05\x85"))
    with pytest.raises(NvidiaPickleError, match=r"32 bytes for shape \(5,\) of float64 \(40 expected\)"):
        read_pickle(path, None)
    path.write_bytes(good.replace(b"K\x04\x85", b"J\x00\x00\x00\x10\x85"))
    with pytest.raises(NvidiaPickleError, match="expected the array's bytes"):
        read_pickle(path, None)


def test_stylegan3_unsafe_opt_in_and_live_conversion(tmp_path, fake):
    pristine = small_sg3("stylegan3-r", seed=2)
    path = write_sg3_pkl(
        tmp_path / "sg3.pkl", fake, copy.deepcopy(pristine), sg3_nvidia_kwargs("stylegan3-r")
    )
    with fake.installed():  # what NVIDIA's dnnlib / torch_utils on sys.path would provide
        G = load_nvidia_pkl(path, allow_unsafe_pickle=True)
    assert type(G) is StyleGAN3Generator
    assert_same_sg3(G, pristine)
    live = as_nvidia_values(copy.deepcopy(pristine))
    live.init_kwargs = sg3_nvidia_kwargs("stylegan3-r")
    assert_same_sg3(convert_nvidia_generator(live), pristine)
    # arguments that change the computation but not the tensors: the recorded attributes say so
    live.init_kwargs = sg3_nvidia_kwargs("stylegan3-r") | dict(output_scale=0.5, conv_clamp=128)
    with pytest.raises(
        UnsupportedGeneratorError,
        match=r"differs from the recorded one: synthesis.output_scale: recorded 0.25, rebuilt 0.5; "
        r"synthesis.L0_36_8.conv_clamp: recorded 256, rebuilt 128",
    ):
        convert_nvidia_generator(live)
    live.init_kwargs = sg3_nvidia_kwargs("stylegan3-r") | dict(mapping_kwargs=dict(num_layers=2, mlp=1))
    with pytest.raises(UnsupportedGeneratorError, match=r"StyleGAN3Generator cannot reproduce .*'mlp'"):
        convert_nvidia_generator(live)


def test_stylegan2_non_default_resample_filter(tmp_path, fake):
    # NVIDIA passes resample_filter to conv0, the skip/resnet layers and the block; conv1 keeps [1, 3, 3, 1].
    G0 = StyleGAN2Generator(**OURS, seed=3, synthesis_kwargs=dict(resample_filter=[1, 2, 1]))
    assert G0.synthesis.b8.conv0.resample_filter.shape == (3, 3)
    assert G0.synthesis.b8.resample_filter.shape == (3, 3)
    assert G0.synthesis.b8.conv1.resample_filter.shape == (4, 4)
    pristine = copy.deepcopy(G0)
    with fake.installed():
        fake.wrap(G0, nvidia_kwargs(resample_filter=[1, 2, 1]))
        path = tmp_path / "rf.pkl"
        path.write_bytes(pickle.dumps(dict(G_ema=G0)))
    assert_same_generator(load_nvidia_pkl(path), pristine)


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
