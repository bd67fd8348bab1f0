// Makes the operator library importable as the Python module tangentlens._C (which also works for
// editable installs); importing it runs the TORCH_LIBRARY registrations. No Python API is exported.
#include <Python.h>

static struct PyModuleDef tangentlens_module = {PyModuleDef_HEAD_INIT, "_C", "tangentlens compiled operators", -1,
                                                nullptr};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&tangentlens_module); }
