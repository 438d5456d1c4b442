# ruff: noqa: E501 - captured output keeps pip's own long lines
"""Real pip output (pip 23.2.1, CPython 3.11.7, Linux x86_64) for the unit tests of issue 17, pip run
as the process backend runs it on a fresh venv: pip's own lines, without blank lines, the host's
"Location ... is ignored" warnings and builds' "copying"/"creating" chatter. No C compiler: a PATH
without gcc/cc; no Rust: the same PATH (no cargo); no network: `unshare -n`, the host's local index only.
"""

# `install --dry-run --only-binary :all: scikit-learn==0.21.3`: the releases with a wheel for 3.11
SKLEARN_WHEELS_ONLY = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
ERROR: Could not find a version that satisfies the requirement scikit-learn==0.21.3 (from versions: 1.1.3, 1.2.0rc1, 1.2.0, 1.2.1, 1.2.2, 1.3.0rc1, 1.3.0, 1.3.1, 1.3.2, 1.4.0rc1, 1.4.0, 1.4.1.post1, 1.4.2, 1.5.0rc1, 1.5.0, 1.5.1, 1.5.2, 1.6.0rc1, 1.6.0, 1.6.1, 1.7.0rc1, 1.7.0, 1.7.1, 1.7.2, 1.8.0rc1, 1.8.0, 1.9.0rc1, 1.9.0, 1.9.1)
ERROR: No matching distribution found for scikit-learn==0.21.3
""".splitlines()

# `install --dry-run scikit-learn==0.21.3`: its 2019 sdist's build fails
SKLEARN_DRY_RUN = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting scikit-learn==0.21.3
  Downloading scikit-learn-0.21.3.tar.gz (12.2 MB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'error'
  error: subprocess-exited-with-error
  × Getting requirements to build wheel did not run successfully.
  │ exit code: 1
  ╰─> [21 lines of output]
      Traceback (most recent call last):
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 353, in <module>
          main()
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 335, in main
          json_out['return_val'] = hook(**hook_input['kwargs'])
                                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 118, in get_requires_for_build_wheel
          return hook(config_settings)
                 ^^^^^^^^^^^^^^^^^^^^^
        File "/tmp/pip-build-env-oscjzko2/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 333, in get_requires_for_build_wheel
          return self._get_build_requires(config_settings, requirements=[])
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        File "/tmp/pip-build-env-oscjzko2/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 301, in _get_build_requires
          self.run_setup()
        File "/tmp/pip-build-env-oscjzko2/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 520, in run_setup
          super().run_setup(setup_script=setup_script)
        File "/tmp/pip-build-env-oscjzko2/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 317, in run_setup
          exec(code, locals())  # noqa: S102 # exec is intentional here
          ^^^^^^^^^^^^^^^^^^^^
        File "<string>", line 12, in <module>
      ModuleNotFoundError: No module named 'pkg_resources'
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
× Getting requirements to build wheel did not run successfully.
│ exit code: 1
╰─> See above for output.
note: This error originates from a subprocess, and is likely not a problem with pip.
""".splitlines()

# `install -r requirements.txt` (boto3, numpy, pandas, scikit-learn==0.21.3)
SKLEARN_REQUIREMENTS = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting boto3 (from -r /tmp/cap/p1/requirements.txt (line 1))
  Downloading boto3-1.44.8-py3-none-any.whl (140 kB)
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from -r /tmp/cap/p1/requirements.txt (line 2))
Collecting pandas (from -r /tmp/cap/p1/requirements.txt (line 3))
  Downloading pandas-3.1.1-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl (12.4 MB)
Collecting scikit-learn==0.21.3 (from -r /tmp/cap/p1/requirements.txt (line 4))
  Downloading scikit-learn-0.21.3.tar.gz (12.2 MB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'error'
  error: subprocess-exited-with-error
  × Getting requirements to build wheel did not run successfully.
  │ exit code: 1
  ╰─> [21 lines of output]
      Traceback (most recent call last):
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 353, in <module>
          main()
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 335, in main
          json_out['return_val'] = hook(**hook_input['kwargs'])
                                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 118, in get_requires_for_build_wheel
          return hook(config_settings)
                 ^^^^^^^^^^^^^^^^^^^^^
        File "/tmp/pip-build-env-i3sfqm6k/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 333, in get_requires_for_build_wheel
          return self._get_build_requires(config_settings, requirements=[])
                 ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
        File "/tmp/pip-build-env-i3sfqm6k/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 301, in _get_build_requires
          self.run_setup()
        File "/tmp/pip-build-env-i3sfqm6k/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 520, in run_setup
          super().run_setup(setup_script=setup_script)
        File "/tmp/pip-build-env-i3sfqm6k/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 317, in run_setup
          exec(code, locals())  # noqa: S102 # exec is intentional here
          ^^^^^^^^^^^^^^^^^^^^
        File "<string>", line 12, in <module>
      ModuleNotFoundError: No module named 'pkg_resources'
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
× Getting requirements to build wheel did not run successfully.
│ exit code: 1
╰─> See above for output.
note: This error originates from a subprocess, and is likely not a problem with pip.
""".splitlines()

# `install --dry-run --only-binary :all: scikit-learn==1.1.3`: the nearest release installs
SKLEARN_113_WHEELS_ONLY = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting scikit-learn==1.1.3
  Downloading scikit_learn-1.1.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (32.0 MB)
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from scikit-learn==1.1.3)
Processing /opt/pypi/files/scipy-1.17.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from scikit-learn==1.1.3)
Processing /opt/pypi/files/joblib-1.6.0-py3-none-any.whl (from scikit-learn==1.1.3)
Collecting threadpoolctl>=2.0.0 (from scikit-learn==1.1.3)
  Downloading threadpoolctl-3.8.0-py3-none-any.whl (32 kB)
Collecting cloudpickle>=3.0 (from joblib>=1.0.0->scikit-learn==1.1.3)
  Downloading cloudpickle-3.1.3-py3-none-any.whl (22 kB)
Would install cloudpickle-3.1.3 joblib-1.6.0 numpy-2.4.6 scikit-learn-1.1.3 scipy-1.17.1 threadpoolctl-3.8.0
""".splitlines()

# `install --dry-run --only-binary :all: transformers==2.9.*`: tokenizers==0.7.0 has no wheel
TRANSFORMERS_WHEELS_ONLY = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting transformers==2.9.*
  Downloading transformers-2.9.1-py3-none-any.whl (641 kB)
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from transformers==2.9.*)
INFO: pip is looking at multiple versions of transformers to determine which version is compatible with other requirements. This could take a while.
Collecting transformers==2.9.*
  Downloading transformers-2.9.0-py3-none-any.whl (635 kB)
ERROR: Cannot install transformers==2.9.0 and transformers==2.9.1 because these package versions have conflicting dependencies.
The conflict is caused by:
    transformers 2.9.1 depends on tokenizers==0.7.0
    transformers 2.9.0 depends on tokenizers==0.7.0
To fix this you could try to:
1. loosen the range of package versions you've specified
2. remove package versions to allow pip attempt to solve the dependency conflict
ERROR: ResolutionImpossible: for help visit https://pip.pypa.io/en/latest/topics/dependency-resolution/#dealing-with-dependency-conflicts
""".splitlines()

# `install -r requirements.txt` (numpy, transformers==2.9.*), no Rust compiler
TRANSFORMERS_NO_RUST = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from -r /tmp/cap/p2/requirements.txt (line 1))
Collecting transformers==2.9.* (from -r /tmp/cap/p2/requirements.txt (line 2))
  Downloading transformers-2.9.1-py3-none-any.whl (641 kB)
Collecting tokenizers==0.7.0 (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading tokenizers-0.7.0.tar.gz (81 kB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Collecting filelock (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading filelock-4.3.2-py3-none-any.whl (244 kB)
Processing /opt/pypi/files/requests-2.34.2-py3-none-any.whl (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
Processing /opt/pypi/files/tqdm-4.70.1-py3-none-any.whl (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
Collecting regex!=2019.12.17 (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading regex-2026.11.19-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl (805 kB)
Collecting sentencepiece (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading sentencepiece-0.2.3-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (1.7 MB)
Collecting sacremoses (from transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading sacremoses-0.2.0-py3-none-any.whl (867 kB)
Collecting charset_normalizer<4,>=2 (from requests->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl (263 kB)
Processing /opt/pypi/files/idna-3.20-py3-none-any.whl (from requests->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
Processing /opt/pypi/files/urllib3-2.8.0-py3-none-any.whl (from requests->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
Collecting certifi>=2023.5.7 (from requests->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading certifi-2026.10.19.post1-py3-none-any.whl (134 kB)
Collecting click>=8.0 (from sacremoses->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading click-8.5.1-py3-none-any.whl (126 kB)
Processing /opt/pypi/files/joblib-1.6.0-py3-none-any.whl (from sacremoses->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
Collecting cloudpickle>=3.0 (from joblib>=1.2.0->sacremoses->transformers==2.9.*->-r /tmp/cap/p2/requirements.txt (line 2))
  Downloading cloudpickle-3.1.3-py3-none-any.whl (22 kB)
Building wheels for collected packages: tokenizers
  Building wheel for tokenizers (pyproject.toml): started
  Building wheel for tokenizers (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for tokenizers (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [59 lines of output]
      /tmp/pip-build-env-91py3jkr/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      running build_rust
      error: can't find Rust compiler
      If you are using an outdated pip version, it is possible a prebuilt wheel is available for this package but pip is not able to install from it. Installing from the wheel would avoid the need for a Rust compiler.
      To update pip, run:
          pip install --upgrade pip
      and then retry package installation.
      If you did intend to build this package from source, try installing a Rust compiler from your system package manager and ensure it is on the PATH during installation. Alternatively, rustup (available at https://rustup.rs) is the recommended way to download and update the Rust compiler toolchain.
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for tokenizers
Failed to build tokenizers
ERROR: Could not build wheels for tokenizers, which is required to install pyproject.toml-based projects
""".splitlines()

# `wheel --no-deps tokenizers==0.7.0`, no Rust compiler
TOKENIZERS_NO_RUST = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting tokenizers==0.7.0
  Downloading tokenizers-0.7.0.tar.gz (81 kB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Building wheels for collected packages: tokenizers
  Building wheel for tokenizers (pyproject.toml): started
  Building wheel for tokenizers (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for tokenizers (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [59 lines of output]
      /tmp/pip-build-env-erkozwxq/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      running build_rust
      error: can't find Rust compiler
      If you are using an outdated pip version, it is possible a prebuilt wheel is available for this package but pip is not able to install from it. Installing from the wheel would avoid the need for a Rust compiler.
      To update pip, run:
          pip install --upgrade pip
      and then retry package installation.
      If you did intend to build this package from source, try installing a Rust compiler from your system package manager and ensure it is on the PATH during installation. Alternatively, rustup (available at https://rustup.rs) is the recommended way to download and update the Rust compiler toolchain.
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for tokenizers
Failed to build tokenizers
ERROR: Failed to build one or more wheels
""".splitlines()

# `install --dry-run git+https://github.com/huggingface/transformers.git@v2.9.1`, no network
GIT_OFFLINE = """\
Looking in indexes: file:///opt/pypi/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting git+https://github.com/huggingface/transformers.git@v2.9.1
  Cloning https://github.com/huggingface/transformers.git (to revision v2.9.1) to /tmp/pip-req-build-xxwy7jll
  Running command git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-xxwy7jll
  fatal: unable to access 'https://github.com/huggingface/transformers.git/': Could not resolve host: github.com
  error: subprocess-exited-with-error
  × git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-xxwy7jll did not run successfully.
  │ exit code: 128
  ╰─> See above for output.
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
× git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-xxwy7jll did not run successfully.
│ exit code: 128
╰─> See above for output.
note: This error originates from a subprocess, and is likely not a problem with pip.
""".splitlines()

# `install -r requirements.txt` (numpy, a comment, the git+https line), no network
GIT_OFFLINE_REQUIREMENTS = """\
Looking in indexes: file:///opt/pypi/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting git+https://github.com/huggingface/transformers.git@v2.9.1 (from -r /tmp/cap/p3/requirements.txt (line 3))
  Cloning https://github.com/huggingface/transformers.git (to revision v2.9.1) to /tmp/pip-req-build-b0iuok3_
  Running command git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-b0iuok3_
  fatal: unable to access 'https://github.com/huggingface/transformers.git/': Could not resolve host: github.com
  error: subprocess-exited-with-error
  × git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-b0iuok3_ did not run successfully.
  │ exit code: 128
  ╰─> See above for output.
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
× git clone --filter=blob:none --quiet https://github.com/huggingface/transformers.git /tmp/pip-req-build-b0iuok3_ did not run successfully.
│ exit code: 128
╰─> See above for output.
note: This error originates from a subprocess, and is likely not a problem with pip.
""".splitlines()

# `wheel --no-deps psutil-5.6.7.tar.gz`, no C compiler
PSUTIL_NO_GCC = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /tmp/cap/dl/psutil-5.6.7.tar.gz
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Building wheels for collected packages: psutil
  Building wheel for psutil (pyproject.toml): started
  Building wheel for psutil (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for psutil (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [55 lines of output]
      /tmp/pip-build-env-vucc0511/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      building 'psutil._psutil_linux' extension
      gcc -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC -DPSUTIL_POSIX=1 -DPSUTIL_VERSION=567 -DPSUTIL_LINUX=1 -DPSUTIL_ETHTOOL_MISSING_TYPES=1 -I/tmp/cap/v/include -I/root/.pyenv/versions/3.11.7/include/python3.11 -c psutil/_psutil_common.c -o build/temp.linux-x86_64-cpython-311/psutil/_psutil_common.o
      error: [Errno 2] No such file or directory: 'gcc'
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for psutil
Failed to build psutil
ERROR: Failed to build one or more wheels
""".splitlines()

# `install -r requirements.txt` (six, psutil==5.6.7), no C compiler
PSUTIL_NO_GCC_REQUIREMENTS = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /opt/pypi/files/six-1.17.0-py2.py3-none-any.whl (from -r /tmp/cap/p4/requirements.txt (line 1))
Collecting psutil==5.6.7 (from -r /tmp/cap/p4/requirements.txt (line 2))
  Downloading psutil-5.6.7.tar.gz (448 kB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Building wheels for collected packages: psutil
  Building wheel for psutil (pyproject.toml): started
  Building wheel for psutil (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for psutil (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [55 lines of output]
      /tmp/pip-build-env-2hlq9r3_/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      building 'psutil._psutil_linux' extension
      gcc -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC -DPSUTIL_POSIX=1 -DPSUTIL_VERSION=567 -DPSUTIL_LINUX=1 -DPSUTIL_ETHTOOL_MISSING_TYPES=1 -I/tmp/cap/v4/include -I/root/.pyenv/versions/3.11.7/include/python3.11 -c psutil/_psutil_common.c -o build/temp.linux-x86_64-cpython-311/psutil/_psutil_common.o
      error: [Errno 2] No such file or directory: 'gcc'
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for psutil
Failed to build psutil
ERROR: Could not build wheels for psutil, which is required to install pyproject.toml-based projects
""".splitlines()

# `wheel --no-deps python-snappy-0.5.4.tar.gz`: libsnappy's header is not installed
SNAPPY_NO_HEADER = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /tmp/cap/dl/python-snappy-0.5.4.tar.gz
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Building wheels for collected packages: python-snappy
  Building wheel for python-snappy (pyproject.toml): started
  Building wheel for python-snappy (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for python-snappy (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [37 lines of output]
      /tmp/pip-build-env-mpf266en/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      building 'snappy._snappy' extension
      gcc -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC -I/tmp/cap/v/include -I/root/.pyenv/versions/3.11.7/include/python3.11 -c snappy/crc32c.c -o build/temp.linux-x86_64-cpython-311/snappy/crc32c.o
      g++ -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC -I/tmp/cap/v/include -I/root/.pyenv/versions/3.11.7/include/python3.11 -c snappy/snappymodule.cc -o build/temp.linux-x86_64-cpython-311/snappy/snappymodule.o
      snappy/snappymodule.cc:31:10: fatal error: snappy-c.h: No such file or directory
         31 | #include <snappy-c.h>
            |          ^~~~~~~~~~~~
      compilation terminated.
      error: Command '['g++', '-Wsign-compare', '-DNDEBUG', '-g', '-fwrapv', '-O3', '-Wall', '-fPIC', '-I/tmp/cap/v/include', '-I/root/.pyenv/versions/3.11.7/include/python3.11', '-c', 'snappy/snappymodule.cc', '-o', 'build/temp.linux-x86_64-cpython-311/snappy/snappymodule.o']' returned non-zero exit status 1.
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for python-snappy
Failed to build python-snappy
ERROR: Failed to build one or more wheels
""".splitlines()

# `install --dry-run --only-binary :all: scikit-learn==0.21.3`, no network (PyPI unreachable, local indexes read)
INDEX_UNREACHABLE = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f4304229a90>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scikit-learn/
WARNING: Retrying (Retry(total=3, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f43028d6750>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scikit-learn/
WARNING: Retrying (Retry(total=2, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f43028d7310>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scikit-learn/
WARNING: Retrying (Retry(total=1, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f43028d7f10>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scikit-learn/
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPSConnection object at 0x7f43028d8b10>: Failed to establish a new connection: [Errno -3] Temporary failure in name resolution')': /simple/scikit-learn/
ERROR: Could not find a version that satisfies the requirement scikit-learn==0.21.3 (from versions: 1.6.1, 1.9.1)
ERROR: No matching distribution found for scikit-learn==0.21.3
""".splitlines()

# `index versions transformers` (cut after ten releases)
TRANSFORMERS_VERSIONS = """\
WARNING: pip index is currently an experimental command. It may be removed/changed in a future release without prior warning.
transformers (5.25.0)
Available versions: 5.25.0, 5.24.0, 5.23.0, 5.22.2, 5.22.1, 5.22.0, 5.21.1, 5.21.0, 5.20.2, 5.20.1
""".splitlines()

# `install --dry-run --report R transformers==2.9.*`: R, its first six items with the fields cortexd reads
TRANSFORMERS_REPORT = '{\n "version": "1",\n "pip_version": "23.2.1",\n "install": [\n  {\n   "download_info": {\n    "url": "https://files.pythonhosted.org/packages/22/97/7db72a0beef1825f82188a4b923e62a146271ac2ced7928baa4d47ef2467/transformers-2.9.1-py3-none-any.whl"\n   },\n   "is_direct": false,\n   "requested": true,\n   "metadata": {\n    "name": "transformers",\n    "version": "2.9.1"\n   }\n  },\n  {\n   "download_info": {\n    "url": "https://files.pythonhosted.org/packages/83/9e/7163dc8ea080e901d8b6c0c64eb3c0b3ffe27a820145448b64d24ca78b97/tokenizers-0.7.0.tar.gz"\n   },\n   "is_direct": false,\n   "requested": false,\n   "metadata": {\n    "name": "tokenizers",\n    "version": "0.7.0"\n   }\n  },\n  {\n   "download_info": {\n    "url": "https://files.pythonhosted.org/packages/ec/9b/010ae7ce9edad5ff603fc6ed8488045a6e6f9f7a028cbd08cd549e338dc5/regex-2026.11.19-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl"\n   },\n   "is_direct": false,\n   "requested": false,\n   "metadata": {\n    "name": "regex",\n    "version": "2026.11.19"\n   }\n  },\n  {\n   "download_info": {\n    "url": "file:///opt/pypi/files/tqdm-4.70.1-py3-none-any.whl"\n   },\n   "is_direct": false,\n   "requested": false,\n   "metadata": {\n    "name": "tqdm",\n    "version": "4.70.1"\n   }\n  },\n  {\n   "download_info": {\n    "url": "https://files.pythonhosted.org/packages/d7/4f/6429bb372197194e65bb33885cd112c7008c2b9cf7496285874aa274e506/filelock-4.3.2-py3-none-any.whl"\n   },\n   "is_direct": false,\n   "requested": false,\n   "metadata": {\n    "name": "filelock",\n    "version": "4.3.2"\n   }\n  },\n  {\n   "download_info": {\n    "url": "file:///opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"\n   },\n   "is_direct": false,\n   "requested": false,\n   "metadata": {\n    "name": "numpy",\n    "version": "2.4.6"\n   }\n  }\n ]\n}'

# `install -r requirements.txt` (numpy, transformers==2.9.*, psutil==5.6.7), no C nor Rust compiler: every sdist built
TWO_BUILDS_FAIL = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from -r /tmp/cap/p5/requirements.txt (line 1))
Collecting transformers==2.9.* (from -r /tmp/cap/p5/requirements.txt (line 2))
  Downloading transformers-2.9.1-py3-none-any.whl (641 kB)
Collecting psutil==5.6.7 (from -r /tmp/cap/p5/requirements.txt (line 3))
  Downloading psutil-5.6.7.tar.gz (448 kB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Collecting tokenizers==0.7.0 (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading tokenizers-0.7.0.tar.gz (81 kB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'done'
  Getting requirements to build wheel: started
  Getting requirements to build wheel: finished with status 'done'
  Preparing metadata (pyproject.toml): started
  Preparing metadata (pyproject.toml): finished with status 'done'
Collecting filelock (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading filelock-4.3.2-py3-none-any.whl (244 kB)
Processing /opt/pypi/files/requests-2.34.2-py3-none-any.whl (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
Processing /opt/pypi/files/tqdm-4.70.1-py3-none-any.whl (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
Collecting regex!=2019.12.17 (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading regex-2026.11.19-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl (805 kB)
Collecting sentencepiece (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading sentencepiece-0.2.3-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (1.7 MB)
Collecting sacremoses (from transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading sacremoses-0.2.0-py3-none-any.whl (867 kB)
Collecting charset_normalizer<4,>=2 (from requests->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading charset_normalizer-3.5.3-cp311-cp311-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl (263 kB)
Processing /opt/pypi/files/idna-3.20-py3-none-any.whl (from requests->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
Processing /opt/pypi/files/urllib3-2.8.0-py3-none-any.whl (from requests->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
Collecting certifi>=2023.5.7 (from requests->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading certifi-2026.10.19.post1-py3-none-any.whl (134 kB)
Collecting click>=8.0 (from sacremoses->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading click-8.5.1-py3-none-any.whl (126 kB)
Processing /opt/pypi/files/joblib-1.6.0-py3-none-any.whl (from sacremoses->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
Collecting cloudpickle>=3.0 (from joblib>=1.2.0->sacremoses->transformers==2.9.*->-r /tmp/cap/p5/requirements.txt (line 2))
  Downloading cloudpickle-3.1.3-py3-none-any.whl (22 kB)
Building wheels for collected packages: psutil, tokenizers
  Building wheel for psutil (pyproject.toml): started
  Building wheel for psutil (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for psutil (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [55 lines of output]
      /tmp/pip-build-env-svosktep/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      building 'psutil._psutil_linux' extension
      gcc -Wsign-compare -DNDEBUG -g -fwrapv -O3 -Wall -fPIC -DPSUTIL_POSIX=1 -DPSUTIL_VERSION=567 -DPSUTIL_LINUX=1 -DPSUTIL_ETHTOOL_MISSING_TYPES=1 -I/tmp/cap/v5/include -I/root/.pyenv/versions/3.11.7/include/python3.11 -c psutil/_psutil_common.c -o build/temp.linux-x86_64-cpython-311/psutil/_psutil_common.o
      error: [Errno 2] No such file or directory: 'gcc'
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for psutil
  Building wheel for tokenizers (pyproject.toml): started
  Building wheel for tokenizers (pyproject.toml): finished with status 'error'
  error: subprocess-exited-with-error
  × Building wheel for tokenizers (pyproject.toml) did not run successfully.
  │ exit code: 1
  ╰─> [59 lines of output]
      /tmp/pip-build-env-kt8y6hd2/overlay/lib/python3.11/site-packages/setuptools/dist.py:765: SetuptoolsDeprecationWarning: License classifiers are deprecated.
      running bdist_wheel
      running build
      running build_py
      warning: build_py: byte-compiling is disabled, skipping.
      running build_ext
      running build_rust
      error: can't find Rust compiler
      If you are using an outdated pip version, it is possible a prebuilt wheel is available for this package but pip is not able to install from it. Installing from the wheel would avoid the need for a Rust compiler.
      To update pip, run:
          pip install --upgrade pip
      and then retry package installation.
      If you did intend to build this package from source, try installing a Rust compiler from your system package manager and ensure it is on the PATH during installation. Alternatively, rustup (available at https://rustup.rs) is the recommended way to download and update the Rust compiler toolchain.
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
  ERROR: Failed building wheel for tokenizers
Failed to build psutil tokenizers
ERROR: Could not build wheels for psutil, tokenizers, which is required to install pyproject.toml-based projects
""".splitlines()

# `install --dry-run --only-binary :all: allennlp==0.9.*`: spacy 2.1 (its dependency) has no wheel for 3.11
ALLENNLP_WHEELS_ONLY = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting allennlp==0.9.* (from -r /tmp/cap/w/one.txt (line 1))
  Downloading allennlp-0.9.0-py3-none-any.whl (7.6 MB)
Processing /opt/pypi-more/files/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl (from allennlp==0.9.*->-r /tmp/cap/w/one.txt (line 1))
Processing /opt/pypi/files/overrides-7.7.0-py3-none-any.whl (from allennlp==0.9.*->-r /tmp/cap/w/one.txt (line 1))
Collecting nltk (from allennlp==0.9.*->-r /tmp/cap/w/one.txt (line 1))
  Downloading nltk-3.10.4-py3-none-any.whl (1.7 MB)
INFO: pip is looking at multiple versions of allennlp to determine which version is compatible with other requirements. This could take a while.
ERROR: Ignored the following versions that require a different python version: 0.2.0 Requires-Python ==3.6
ERROR: Could not find a version that satisfies the requirement spacy<2.2,>=2.1.0 (from allennlp) (from versions: 2.3.8, 2.3.9, 3.1.7, 3.2.5, 3.4.2, 3.4.3, 3.4.4, 3.5.0, 3.5.1, 3.5.2, 3.5.3, 3.5.4, 3.6.0.dev0, 3.6.0, 3.6.1, 3.7.0, 3.7.1, 3.7.2, 3.7.3, 3.7.4, 3.7.5, 3.7.6, 3.8.0, 3.8.1, 3.8.2, 3.8.3, 3.8.4, 3.8.5, 3.8.6, 3.8.7, 3.8.8, 3.8.9, 3.8.10, 3.8.11, 3.8.12, 3.8.13, 3.8.14, 3.8.15, 3.8.16, 3.8.17, 3.8.18, 4.0.0.dev1, 4.0.0.dev2, 4.0.0.dev3)
ERROR: No matching distribution found for spacy<2.2,>=2.1.0
""".splitlines()

# `install -r requirements.txt` (allennlp==0.9.* on line 1, numpy): spacy 2.1.9's build needs preshed 2.0.1,
# whose own build fails in a nested, indented pip (a dry run of the line alone said the same)
ALLENNLP_REQUIREMENTS = """\
Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
Looking in links: /opt/wheels
Collecting allennlp==0.9.* (from -r /tmp/cap/p6/requirements.txt (line 1))
  Downloading allennlp-0.9.0-py3-none-any.whl (7.6 MB)
Processing /opt/pypi/files/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl (from -r /tmp/cap/p6/requirements.txt (line 2))
Processing /opt/pypi-more/files/torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl (from allennlp==0.9.*->-r /tmp/cap/p6/requirements.txt (line 1))
Processing /opt/pypi/files/overrides-7.7.0-py3-none-any.whl (from allennlp==0.9.*->-r /tmp/cap/p6/requirements.txt (line 1))
Collecting nltk (from allennlp==0.9.*->-r /tmp/cap/p6/requirements.txt (line 1))
  Downloading nltk-3.10.4-py3-none-any.whl (1.7 MB)
Collecting spacy<2.2,>=2.1.0 (from allennlp==0.9.*->-r /tmp/cap/p6/requirements.txt (line 1))
  Downloading spacy-2.1.9.tar.gz (30.7 MB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'error'
  error: subprocess-exited-with-error
  × pip subprocess to install build dependencies did not run successfully.
  │ exit code: 1
  ╰─> [64 lines of output]
      Looking in indexes: https://pypi.org/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple, file:///opt/pypi/simple, file:///opt/pypi-more/simple
      Looking in links: /opt/wheels, /opt/wheels
      Collecting setuptools
        Downloading setuptools-84.2.1-py3-none-any.whl (876 kB)
      Collecting wheel<0.33.0,>0.32.0
        Downloading wheel-0.32.3-py2.py3-none-any.whl (21 kB)
      Collecting Cython
        Downloading cython-3.3.1-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.manylinux_2_28_x86_64.whl (3.5 MB)
      Collecting cymem<2.1.0,>=2.0.2
        Downloading cymem-2.0.16-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl (253 kB)
      Collecting preshed<2.1.0,>=2.0.1
        Downloading preshed-2.0.1.tar.gz (113 kB)
        Installing build dependencies: started
        Installing build dependencies: finished with status 'done'
        Getting requirements to build wheel: started
        Getting requirements to build wheel: finished with status 'error'
        error: subprocess-exited-with-error
        × Getting requirements to build wheel did not run successfully.
        │ exit code: 1
        ╰─> [21 lines of output]
            Traceback (most recent call last):
              File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 353, in <module>
                main()
              File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 335, in main
                json_out['return_val'] = hook(**hook_input['kwargs'])
                                         ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              File "/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 118, in get_requires_for_build_wheel
                return hook(config_settings)
                       ^^^^^^^^^^^^^^^^^^^^^
              File "/tmp/pip-build-env-399kbhpo/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 333, in get_requires_for_build_wheel
                return self._get_build_requires(config_settings, requirements=[])
                       ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              File "/tmp/pip-build-env-399kbhpo/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 301, in _get_build_requires
                self.run_setup()
              File "/tmp/pip-build-env-399kbhpo/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 520, in run_setup
                super().run_setup(setup_script=setup_script)
              File "/tmp/pip-build-env-399kbhpo/overlay/lib/python3.11/site-packages/setuptools/build_meta.py", line 317, in run_setup
                exec(code, locals())  # noqa: S102 # exec is intentional here
                ^^^^^^^^^^^^^^^^^^^^
              File "<string>", line 9, in <module>
            ImportError: cannot import name 'msvccompiler' from 'distutils' (/tmp/pip-build-env-399kbhpo/overlay/lib/python3.11/site-packages/setuptools/_distutils/__init__.py)
            [end of output]
        note: This error originates from a subprocess, and is likely not a problem with pip.
      error: subprocess-exited-with-error
      × Getting requirements to build wheel did not run successfully.
      │ exit code: 1
      ╰─> See above for output.
      note: This error originates from a subprocess, and is likely not a problem with pip.
      [end of output]
  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error
× pip subprocess to install build dependencies did not run successfully.
│ exit code: 1
╰─> See above for output.
note: This error originates from a subprocess, and is likely not a problem with pip.
""".splitlines()
