"""Build the VidXAI desktop bundle (PyInstaller, one folder) into dist/vidxai/ and report what it cost.

    .venv/bin/python packaging/build.py                 # CPU bundle from the current environment
    .venv/bin/python packaging/build.py --target gpu    # keep every CUDA library (CUDA build of torch)
    .venv/bin/python packaging/build.py --tar           # also dist/vidxai-<version>-<os>-<arch>-<target>.tar.gz
    .venv/bin/python packaging/build.py --check         # then run `dist/vidxai/vidxai --self-test` from `env -i`

Prints the build time and the bundle size, and writes them to dist/vidxai-build.json. Refuses to build a
bundle that would ship without its default model or demo clip unless --allow-missing-resources is given
(useful for testing the packaging while the default model is still being trained).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

log = logging.getLogger("vidxai.build")

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "packaging" / "vidxai.spec"
REQUIRED_RESOURCES = ("demo_crema-d_1001_DFA_HAP_XX.flv",)
# At least one default model, as engine.resources picks it (the most interpretable one installed).
MODEL_CHOICES = ("protopnet", "patchsae", "cnn")


def tree_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under ``folder``; symbolic links are not followed or counted."""
    total = files = 0
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            p = Path(dirpath) / name
            if not p.is_symlink():
                total += p.stat().st_size
                files += 1
    return total, files


def missing_resources(resources: Path) -> list[Path]:
    missing = [resources / r for r in REQUIRED_RESOURCES if not (resources / r).is_file()]
    models = [resources / "models" / m for m in MODEL_CHOICES]
    if not any((m / "model.json").is_file() and (m / "model.safetensors").is_file() for m in models):
        missing.append(models[0] / "model.json")  # name the model users should have
    return missing


def make_tar(bundle: Path, out: Path) -> Path:
    """``bundle`` as ``out`` (.tar.gz), symbolic links kept as links, rooted at the bundle's folder name."""
    tmp = out.with_suffix(out.suffix + ".part")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(bundle, arcname=bundle.name)
    os.replace(tmp, out)
    return out


def clean_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `env -i`: no virtualenv, no Python variables, a fresh HOME; PATH has only the system."""
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def self_test(bundle: Path, extra_env: dict[str, str] | None = None, timeout: float = 900) -> tuple[int, str]:
    """Run ``bundle/vidxai --self-test`` with `env -i` and a temporary HOME; (exit code, its output)."""
    exe = bundle / ("vidxai.exe" if sys.platform == "win32" else "vidxai")
    with tempfile.TemporaryDirectory(prefix="vidxai-bundle-home-") as home:
        env = clean_env(Path(home), extra_env)
        cmd = [str(exe), "--self-test"]
        if shutil.which("env") and sys.platform != "win32":
            cmd = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *cmd]
        proc = subprocess.run(cmd, check=False, env=env, cwd=home, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def unresolved_libraries(bundle: Path) -> dict[str, list[str]]:
    """Linux: for each Qt platform plugin in the bundle, the libraries `ldd` cannot find with the bundle's own
    folder on the library path. PyInstaller bundles what the build machine has; whatever is listed here must be
    installed on the user's machine (e.g. libxcb-icccm4, libxcb-keysyms1 for the X11 plugin)."""
    internal = bundle / "_internal"
    plugins = internal / "PySide6" / "Qt" / "plugins" / "platforms"
    if not sys.platform.startswith("linux") or not plugins.is_dir() or not shutil.which("ldd"):
        return {}
    env = {**os.environ, "LD_LIBRARY_PATH": str(internal)}
    found: dict[str, list[str]] = {}
    for plugin in sorted(plugins.glob("*.so")):
        out = subprocess.run(["ldd", str(plugin)], env=env, capture_output=True, text=True, check=False).stdout
        missing = sorted({line.split()[0] for line in out.splitlines() if "not found" in line})
        if missing:
            found[plugin.name] = missing
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: runs on the CPU everywhere, smallest from this environment (default); "
                        "gpu: keeps every CUDA library")
    p.add_argument("--resources", type=Path, default=ROOT / "resources",
                   help="folder shipped as the bundle's resources/ (default: the repository's)")
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder (the bundle is DIST/vidxai)")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller", help="PyInstaller's work folder")
    p.add_argument("--clean", action="store_true", help="discard PyInstaller's cached analysis first")
    p.add_argument("--tar", action="store_true", help="also pack the bundle as a .tar.gz beside it")
    p.add_argument("--check", action="store_true", help="run the bundle's --self-test from `env -i` afterwards")
    p.add_argument("--allow-missing-resources", action="store_true",
                   help="build even when the default model or the demo clip is missing (not for shipping)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="build: %(message)s")

    missing = missing_resources(args.resources)
    if missing:
        names = ", ".join(str(m) for m in missing)
        if not args.allow_missing_resources:
            log.error("not building a bundle without its resources: missing %s "
                      "(train the default model with resources/models/train.sh, or pass --allow-missing-resources)",
                      names)
            return 2
        log.warning("building WITHOUT %s: the bundle's --self-test will fail naming it", names)

    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        log.error("PyInstaller is not installed in %s: run `%s -m pip install -e '.[bundle]'`",
                  sys.prefix, sys.executable)
        return 2
    bundle = args.dist / "vidxai"
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(args.dist), "--workpath", str(args.work)]
    if args.clean:
        cmd.append("--clean")
    cmd += [str(SPEC), "--", "--target", args.target, "--resources", str(args.resources.resolve())]
    log.info("%s", " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.run(cmd, check=False, cwd=ROOT)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        log.error("PyInstaller failed (exit %d) after %.0f s", proc.returncode, seconds)
        return proc.returncode or 1
    size, files = tree_size(bundle)
    report: dict[str, object] = {
        "bundle": str(bundle), "target": args.target, "build_seconds": round(seconds, 1),
        "bundle_bytes": size, "bundle_files": files, "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
    }
    info = bundle / "_internal" / "vidxai_bundle.json"
    if info.is_file():
        report.update(torch=json.loads(info.read_text(encoding="utf-8")).get("torch"))
    unresolved = unresolved_libraries(bundle)
    report["unresolved_system_libraries"] = unresolved
    for plugin, libs in unresolved.items():
        log.warning("Qt plugin %s needs %s, not on this build machine so not bundled: users must have them",
                    plugin, ", ".join(libs))
    print(f"build time: {seconds / 60:.1f} min ({seconds:.0f} s)")
    print(f"bundle: {bundle} — {size / 2**30:.2f} GiB in {files} files")
    if args.tar:
        version = _version()
        out = args.dist / f"vidxai-{version}-{platform.system().lower()}-{platform.machine()}-{args.target}.tar.gz"
        t0 = time.monotonic()
        make_tar(bundle, out)
        report.update(tar=str(out), tar_bytes=out.stat().st_size, tar_seconds=round(time.monotonic() - t0, 1))
        print(f"archive: {out} — {out.stat().st_size / 2**30:.2f} GiB ({time.monotonic() - t0:.0f} s)")
    code = 0
    if args.check:
        code, output = self_test(bundle)
        report.update(self_test_exit=code)
        print(output.rstrip())
        print(f"self-test from env -i: exit {code}")
    (args.dist / "vidxai-build.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return code


def _version() -> str:
    try:
        import tomllib

        return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "0"


if __name__ == "__main__":
    sys.exit(main())
