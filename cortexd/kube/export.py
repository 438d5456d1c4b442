"""`cortexd export kubernetes`: the manifests of a project's APIs (and the HTTPRoutes of its traffic
splitters, kube/splitter.py; a BatchAPI's job given with --job, kube/batch_job.py) written to a
folder (I/O shell).

Everything is decided before anything is written: the configuration loads and
validates, every API's files are read (a missing model folder stops here),
every manifest is rendered. Then the files are written into a temporary
folder beside DIR and moved in (a rename when DIR does not exist yet, one
os.replace per file otherwise), so an error never leaves DIR half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from cortexd.backends.image_plans import runtime_release
from cortexd.core.batch_jobs import Submission, SubmissionError, parse_submission
from cortexd.errors import ExportError
from cortexd.job_sources import submission_batches
from cortexd.kube import layout
from cortexd.kube.batch_job import (
    COMPLETE_FOLDER,
    batch_apis_with_jobs,
    cluster_job,
    completion_job,
    config_map,
    indexed_job,
)
from cortexd.kube.bundle import ImageFiles, read_image_files
from cortexd.kube.manifests import FLAVORS, ExportOptions, dotenv_secret, manifests, secret_keys
from cortexd.kube.report import batch_notes, notes_for, report_lines, targets_line
from cortexd.kube.splitter import GATEWAY_API, GATEWAY_API_MIN, http_route, splitter_notes
from cortexd.spec.model import APISpec, SplitterSpec
from cortexd.spec.units import format_bytes

REPORT_FILE = "cortexd-report.txt"  # kubectl apply -f DIR reads only .yaml/.yml/.json


@dataclass(frozen=True)
class Rendered:
    spec: APISpec
    image: str
    filename: str
    text: str
    report: list[str]
    secret: tuple[str, str] | None = None  # (file name, text) of the .env Secret


def check_request(registry: str | None, flavor: str) -> str:
    """The registry to use, or ExportError: an unknown flavor, no registry, a malformed one."""
    if flavor not in FLAVORS:
        raise ExportError(f"unknown flavor {flavor!r}: choose one of {', '.join(FLAVORS)}")
    if not registry:
        raise ExportError(
            "--registry is required: the project's files (predictor code, local models) run in the "
            "cluster from an image that `cortexd build --registry REG --push` makes, and the manifests "
            "name it REG/<api>:<hash>; e.g. --registry ghcr.io/my-team")
    problem = layout.registry_problem(registry)
    if problem:
        raise ExportError(problem)
    return registry.rstrip("/")


def image_files_for(spec: APISpec, files: ImageFiles) -> dict[str, layout.ContextFile]:
    """The build-context files of the API's last image layer (they name its tag)."""
    spec_json = layout.image_runtime_spec(spec).dumps().encode()
    return layout.bundle_files(spec, files.files, spec_json, runtime_release())


class _PlainDumper(yaml.SafeDumper):
    """No &anchors / *aliases for repeated values: the files are for people and kubectl."""

    def ignore_aliases(self, data) -> bool:
        return True


def dump_yaml(objects: list[dict]) -> str:
    return "---\n".join(yaml.dump(o, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)
                         for o in objects)


def render(spec: APISpec, registry: str, options: ExportOptions) -> Rendered:
    files = read_image_files(spec)
    image = layout.image_name(registry, spec, image_files_for(spec, files))
    env = layout.container_env(spec, files.dotenv)
    hidden = secret_keys(files.dotenv)
    objects = manifests(spec, image, env, options, hidden)
    secret = dotenv_secret(spec, {k: files.dotenv[k] for k in hidden}, options)
    filename = f"{spec.name}.yaml"
    header = (f"# cortexd export kubernetes --flavor {options.flavor}: api {spec.name!r} from "
              f"{spec.source_file}:{spec.source_line}\n# {targets_line()}\n")
    sizes = [f"model {m.path}: {m.files} file(s), {format_bytes(m.size, 1)}, in the image at {m.in_image}"
             for m in files.models]
    secret_file = f"{spec.name}.secret.yaml" if secret is not None else None
    notes = [*files.warnings, *notes_for(spec, options.flavor, sorted(files.dotenv), image, sizes,
                                         secret_file=secret_file,
                                         plain=[k for k in files.dotenv if k not in hidden])]
    kinds = [f"{o['kind']} {o['metadata']['name']}" for o in objects]
    written = filename
    if secret is not None:
        kinds.append(f"Secret {secret['metadata']['name']}")
        written = f"{filename}, {secret_file}"
    report = report_lines(spec, options.flavor, written, kinds, notes)
    secret_text = None
    if secret is not None and secret_file is not None:
        secret_text = (secret_file, f"# cortexd export kubernetes: the .env of api {spec.name!r} "
                                    f"({spec.project_dir}/.env); plain text: keep it out of version "
                                    f"control\n" + dump_yaml([secret]))
    return Rendered(spec, image, filename, header + dump_yaml(objects), report, secret_text)


def render_splitter(spec: SplitterSpec, options: ExportOptions, exported: set[str]) -> tuple[str, str, list[str]]:
    """(file name, text, report lines) of one traffic splitter's HTTPRoute."""
    filename = f"{spec.name}.yaml"
    route = http_route(spec, options)
    header = (f"# cortexd export kubernetes: traffic splitter {spec.name!r} from {spec.source_file}:"
              f"{spec.source_line}\n# a Gateway API HTTPRoute; see {REPORT_FILE} for what the cluster needs\n")
    report = [f"traffic splitter {spec.name!r}: wrote {filename} (HTTPRoute {spec.name})"]
    report += [f"  note: {note}" for note in splitter_notes(spec, options, exported)]
    report.append("  networking.local_port: replaced by the Gateway's listeners")
    return filename, header + dump_yaml([route]), report


def read_job(spec: APISpec, path: Path) -> tuple[Submission, list[str], list[str]]:
    """(submission, batches, files read) of a job request body in a JSON file, cut into batches
    as the daemon cuts a submitted job (job_sources.submission_batches); ExportError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ExportError(f"--job {spec.name}={path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    try:
        body = json.loads(text)
    except ValueError as e:
        where = f"{path}:{e.lineno}:{e.colno}" if isinstance(e, json.JSONDecodeError) else str(path)
        raise ExportError(f"{where}: not JSON: {getattr(e, 'msg', e)} (a job's submission: Cortex's job "
                          "request body, e.g. {\"workers\": 2, \"item_list\": {\"items\": [...], "
                          "\"batch_size\": 10}})") from None
    try:
        submission = parse_submission(body)
        batches, files = submission_batches(submission, spec.project_dir)
    except SubmissionError as e:
        raise ExportError(f"{path}: batch api {spec.name!r}: {e}") from None
    return submission, batches, files


def render_batch(spec: APISpec, registry: str, options: ExportOptions, job_file: Path,
                 start_time: str) -> tuple[Rendered, tuple[str, str]]:
    """A BatchAPI's job: (its Rendered: ConfigMap and Indexed Job, .env Secret; the completion
    Job's (file name, text))."""
    submission, batches, files = read_job(spec, job_file)
    image_files = read_image_files(spec)
    image = layout.image_name(registry, spec, image_files_for(spec, image_files))
    env = layout.container_env(spec, image_files.dotenv)
    hidden = secret_keys(image_files.dotenv)
    job = cluster_job(spec, image, submission, batches, start_time)
    objects = [config_map(spec, job, options), indexed_job(spec, image, env, job, options, hidden)]
    complete = completion_job(spec, image, env, job, options, hidden)
    secret = dotenv_secret(spec, {k: image_files.dotenv[k] for k in hidden}, options)
    filename, complete_file = f"{spec.name}.yaml", f"{COMPLETE_FOLDER}/{spec.name}.yaml"
    secret_file = f"{spec.name}.secret.yaml" if secret is not None else None
    header = (f"# cortexd export kubernetes --job: batch api {spec.name!r} from {spec.source_file}:"
              f"{spec.source_line}, job {job.job_id} ({job_file})\n# {targets_line()}\n")
    notes = [*image_files.warnings, *notes_for(spec, "deployment", sorted(image_files.dotenv), image, [],
                                              secret_file=secret_file,
                                              plain=[k for k in image_files.dotenv if k not in hidden])]
    notes += batch_notes(spec, job, submission, files, complete_file)
    kinds = [f"{o['kind']} {o['metadata']['name']}" for o in objects] + [f"Job {job.name}-complete"]
    written = ", ".join(n for n in (filename, secret_file, complete_file) if n)
    report = report_lines(spec, options.flavor, written, kinds, notes)
    secret_text = None
    if secret is not None and secret_file is not None:
        secret_text = (secret_file, f"# cortexd export kubernetes: the .env of batch api {spec.name!r}; plain "
                                    "text: keep it out of version control\n" + dump_yaml([secret]))
    complete_text = (f"# cortexd export kubernetes --job: on_job_complete of job {job.job_id}; apply it once "
                     f"Job {job.name} is complete\n" + dump_yaml([complete]))
    rendered = Rendered(spec, image, filename, header + dump_yaml(objects), report, secret_text)
    return rendered, (complete_file, complete_text)


def write_atomically(out_dir: Path, files: dict[str, str], private: Collection[str] = ()) -> None:
    """Write `files` (name -> text) into out_dir so that a failure leaves out_dir as it was; those
    named in `private` (the .env Secrets) are made 0600, as the .env they come from should be,
    whatever out_dir's mode (an existing DIR may be readable by every user)."""
    out_dir = out_dir.absolute()
    parent = out_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=parent))
    except OSError as e:
        raise ExportError(f"cannot write into {parent}: {e.strerror or e}") from None
    try:
        for name, text in files.items():
            (tmp / name).parent.mkdir(exist_ok=True)
            fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if name in private else 0o666)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        if out_dir.exists() and not out_dir.is_dir():
            raise ExportError(f"{out_dir} exists and is not a folder")
        if not out_dir.exists():
            tmp.rename(out_dir)
            return
        for name in files:
            (out_dir / name).parent.mkdir(exist_ok=True)
            os.replace(tmp / name, out_dir / name)
    except OSError as e:
        raise ExportError(f"cannot write the manifests into {out_dir}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_kubernetes(apis: list[APISpec], registry: str | None, options: ExportOptions,
                      out_dir: Path, splitters: Sequence[SplitterSpec] = (),
                      jobs: Mapping[str, Path] | None = None, now: datetime | None = None) -> list[str]:
    """Render and write every API's manifests, every splitter's HTTPRoute and each BatchAPI's
    job (`jobs`: api name -> its submission file); returns the report's lines."""
    registry = check_request(registry, options.flavor)
    rendered = [render(spec, registry, options) for spec in apis if spec.kind != "BatchAPI"]
    start = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    batch = [render_batch(spec, registry, options, (jobs or {})[spec.name], start)
             for spec in batch_apis_with_jobs(apis, jobs or {})]
    rendered += [r for r, _ in batch]
    routes = [render_splitter(s, options, {a.name for a in apis}) for s in splitters]
    report = [targets_line()]
    if routes:
        report[0] += (f"; HTTPRoutes the Gateway API's standard channel {GATEWAY_API} (validated against its CRD "
                      f"schema; {GATEWAY_API_MIN} or later serves them)")
    for r in rendered:
        report.extend(r.report)
    for _, _, lines in routes:
        report.extend(lines)
    files = {r.filename: r.text for r in rendered}
    files.update((name, text) for name, text, _ in routes)
    secrets = dict(r.secret for r in rendered if r.secret is not None)
    files.update(secrets)
    files.update(complete for _, complete in batch)
    files[REPORT_FILE] = "\n".join(report) + "\n"
    write_atomically(out_dir, files, private=secrets)
    done = (f"wrote {len(rendered) + len(routes)} manifest file(s) and {REPORT_FILE} to {out_dir}; "
            f"apply with `kubectl apply -f {out_dir}`")
    return [*report, done]
