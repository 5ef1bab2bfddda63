"""The runtime side of CNI (what libcni does): find plugins, run them, chain, cache, GC.

``Invoker`` runs a network's plugin list for one attachment exactly as containerd or podman's
CNI backend would: per-plugin request configs with ``runtimeConfig`` from declared
capabilities, ``prevResult`` chaining, DEL in reverse with the cached result, CHECK honouring
``disableCheck``, STATUS, and GC (a synthetic DEL for each stale cached attachment, then GC to
every plugin). Beyond libcni: a failed ADD is undone with a DEL of the chain before the error is
returned, and an "ADD in progress" cache entry makes a crash mid-ADD visible to GC.

Each plugin is run by the ``runner`` the caller hands the invoker (``pycni.cni.runner``): exec,
as libcni does, unless it passes another (pycni's callers pass ``pycni.plugins.runner``'s,
which run pycni's own plugins forked or in-process, still through the protocol).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

from pycni.cni import cache, jsonio
from pycni.cni import version as versions
from pycni.cni._fields import path_problem
from pycni.cni.conf import NetworkConfigList
from pycni.cni.errors import CNIError, ErrorCode
from pycni.cni.runner import EXEC, PluginRunner, PluginTimeout, find_in_path
from pycni.cni.skel import validate_container_id, validate_ifname
from pycni.cni.types import Result

__all__ = ["Invoker", "RuntimeConf", "build_plugin_config"]

@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConf:
    """One attachment: which container, where its netns is, and the runtime's arguments."""

    container_id: str
    netns: str = ""
    ifname: str = "eth0"
    cni_args: tuple[tuple[str, str], ...] = ()
    capability_args: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        validate_container_id(self.container_id)
        validate_ifname(self.ifname)


def build_plugin_config(
    conflist: NetworkConfigList,
    plugin: Mapping[str, Any],
    *,
    capability_args: Mapping[str, Any],
    prev_result: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The stdin of one plugin (spec §3 "Deriving request configuration")."""
    doc = dict(plugin)
    doc["name"] = conflist.name
    doc["cniVersion"] = conflist.cni_version
    declared = plugin.get("capabilities") or {}
    runtime_config = {k: v for k, v in capability_args.items() if declared.get(k)}
    if runtime_config:
        doc["runtimeConfig"] = runtime_config
    if prev_result is not None:
        doc["prevResult"] = dict(prev_result)
    if extra:
        doc.update(extra)
    return json.dumps(doc).encode()


def _plugin_error(returncode: int, stdout: bytes, stderr: bytes) -> CNIError:
    text = stdout.strip()
    if text:
        try:
            return CNIError.from_dict(jsonio.loads(text), fallback=text.decode(errors="replace"))
        except ValueError:
            return CNIError(
                ErrorCode.INTERNAL,
                "plugin failed with an unparsable error",
                text.decode(errors="replace"),
            )
    return CNIError(
        ErrorCode.INTERNAL,
        f"plugin failed with exit status {returncode}",
        stderr.decode(errors="replace").strip(),
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _settling(
    verb: Callable[Concatenate[Invoker, _P], _R],
) -> Callable[Concatenate[Invoker, _P], _R]:
    """A verb returns with every plugin process it ran gone (the runner's ``settle``)."""

    @functools.wraps(verb)
    def wrapper(invoker: Invoker, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return verb(invoker, *args, **kwargs)
        finally:
            invoker.runner.settle()

    return wrapper


@dataclass(frozen=True, slots=True, kw_only=True)
class Invoker:
    path: tuple[str, ...]
    cache_dir: str = cache.DEFAULT_CACHE_DIR
    timeout: float = 60.0
    base_env: Mapping[str, str] | None = None
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    runner: PluginRunner = EXEC

    # ---- plugin execution -------------------------------------------------------------------

    def find_plugin(self, kind: str) -> str:
        return find_in_path(kind, self.path)

    def _env(self, command: str, rt: RuntimeConf | None) -> dict[str, str]:
        base = os.environ if self.base_env is None else self.base_env
        env = {k: v for k, v in base.items() if not k.startswith("CNI_")}
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = os.pathsep.join(self.path)
        if rt is not None:
            env["CNI_CONTAINERID"] = rt.container_id
            env["CNI_NETNS"] = rt.netns
            env["CNI_IFNAME"] = rt.ifname
            env["CNI_ARGS"] = ";".join(f"{k}={v}" for k, v in rt.cni_args)
        return env

    def exec_plugin(self, kind: str, command: str, stdin: bytes, rt: RuntimeConf | None) -> bytes:
        """Run one plugin verb; its stdout on success, its error JSON as ``CNIError`` otherwise."""
        binary = self.find_plugin(kind)
        try:
            outcome = self.runner.run(binary, kind, stdin=stdin, env=self._env(command, rt),
                                      timeout=self.timeout)
        except PluginTimeout as err:
            raise CNIError(
                ErrorCode.INTERNAL, f"plugin {kind} {command} timed out", f"after {self.timeout}s"
            ) from err
        if outcome.stderr:
            self.log(outcome.stderr.decode(errors="replace").rstrip())
        if outcome.status != 0:
            raise _plugin_error(outcome.status, outcome.stdout, outcome.stderr)
        return outcome.stdout

    def version_info(self, kind: str) -> dict[str, Any]:
        out = self.exec_plugin(
            kind, "VERSION", json.dumps({"cniVersion": versions.CURRENT}).encode(), None
        )
        try:
            doc = jsonio.loads(out)
        except ValueError as err:  # was an uncaught ValueError: callers only handle CNIError
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"plugin {kind} VERSION answer is not JSON", str(err)
            ) from err
        if not isinstance(doc, dict):
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"plugin {kind} VERSION answer is not an object"
            )
        return doc

    # ---- verbs on a network list ------------------------------------------------------------

    def _validate(self, rt: RuntimeConf | None, network: str = "") -> None:
        """Attachment names and cache dir, before the cache (or anything else) is touched."""
        if rt is not None:
            rt.validate()
            cache.check_entry_name(network, rt.container_id, rt.ifname)
        problem = path_problem(self.cache_dir)
        if problem:
            raise CNIError(ErrorCode.INVALID_ENVIRONMENT, "invalid cache dir", problem)

    @_settling
    def add(self, conflist: NetworkConfigList, rt: RuntimeConf, *, rollback: bool = True) -> Result:
        self._validate(rt, conflist.name)
        self._refuse_live_attachment(conflist, rt)
        cache.write(self.cache_dir, self._cache_entry(conflist, rt, None))
        prev: dict[str, Any] | None = None
        try:
            for plugin in conflist.plugins:
                stdin = build_plugin_config(
                    conflist, plugin, capability_args=rt.capability_args, prev_result=prev
                )
                out = self.exec_plugin(str(plugin["type"]), "ADD", stdin, rt)
                prev = self._parse_result(out, conflist, str(plugin["type"]))
            assert prev is not None
            cache.write(self.cache_dir, self._cache_entry(conflist, rt, prev))
        except CNIError as err:
            if rollback:
                self._undo_failed_add(conflist, rt, prev, err)
            raise
        return Result.from_dict(prev)

    def _refuse_live_attachment(self, conflist: NetworkConfigList, rt: RuntimeConf) -> None:
        """A completed entry is a live attachment (the spec forbids a second ADD before its
        DEL): an ADD over it would fail on what it holds, and the rollback DEL of that
        failure would destroy it. An entry without a result (a crashed ADD) may be retried."""
        path = cache.entry_path(self.cache_dir, conflist.name, rt.container_id, rt.ifname)
        entry = cache.read(path)
        if entry is not None and entry.result is not None:
            raise CNIError(
                ErrorCode.INVALID_ENVIRONMENT,
                "attachment already exists",
                f"{conflist.name}/{rt.container_id}/{rt.ifname} was added and not deleted "
                f"({path}); DEL it first",
            )

    def _undo_failed_add(
        self,
        conflist: NetworkConfigList,
        rt: RuntimeConf,
        prev: Mapping[str, Any] | None,
        cause: CNIError,
    ) -> None:
        # The spec makes the runtime DEL after a failed ADD; we do it here so a failed
        # `pycni add` never leaves a half-built chain (plugin 1 done, plugin 2 failed).
        try:
            self._del_chain(conflist, rt, prev)
        except CNIError as err:
            self.log(f"pycni: cleanup after failed ADD ({cause}) also failed: {err}")
            return
        try:
            cache.delete(self.cache_dir, conflist.name, rt.container_id, rt.ifname)
        except CNIError as err:  # the cause is what the caller must hear about
            self.log(f"pycni: cleanup after failed ADD ({cause}): {err}")

    def _parse_result(self, out: bytes, conflist: NetworkConfigList, kind: str) -> dict[str, Any]:
        try:
            doc = jsonio.loads(out)
        except ValueError as err:
            raise CNIError(
                ErrorCode.DECODING_FAILURE, f"plugin {kind} printed no valid result", str(err)
            ) from err
        if not isinstance(doc, dict):
            raise CNIError(ErrorCode.DECODING_FAILURE, f"plugin {kind} result is not an object")
        # libcni's fixupResultVersion: a missing, empty or non-string cniVersion means the
        # config's (setdefault alone let "" through to a code-1 failure of a good result).
        if not isinstance(doc.get("cniVersion"), str) or not doc["cniVersion"]:
            doc["cniVersion"] = conflist.cni_version
        return Result.from_dict(doc).to_dict(conflist.cni_version)

    def _cache_entry(
        self, conflist: NetworkConfigList, rt: RuntimeConf, result: Mapping[str, Any] | None
    ) -> cache.CachedAttachment:
        return cache.CachedAttachment(
            network=conflist.name,
            container_id=rt.container_id,
            ifname=rt.ifname,
            netns=rt.netns,
            cni_args=rt.cni_args,
            capability_args=rt.capability_args,
            config=conflist.raw,
            result=result,
        )

    def _cached_result(self, conflist: NetworkConfigList, rt: RuntimeConf) -> dict[str, Any] | None:
        """The cached ADD result in the list's version; ``None`` if absent or corrupt."""
        path = cache.entry_path(self.cache_dir, conflist.name, rt.container_id, rt.ifname)
        entry = cache.read(path)
        if entry is None or entry.result is None:
            return None
        try:
            return Result.from_dict(entry.result).to_dict(conflist.cni_version)
        except CNIError as err:
            self.log(f"pycni: ignoring unusable cached result {path}: {err}")
            return None

    def _del_chain(
        self, conflist: NetworkConfigList, rt: RuntimeConf, prev: Mapping[str, Any] | None
    ) -> None:
        for plugin in reversed(conflist.plugins):
            stdin = build_plugin_config(
                conflist, plugin, capability_args=rt.capability_args, prev_result=prev
            )
            self.exec_plugin(str(plugin["type"]), "DEL", stdin, rt)

    @_settling
    def delete(self, conflist: NetworkConfigList, rt: RuntimeConf) -> None:
        self._validate(rt, conflist.name)
        prev = None
        if versions.at_least(conflist.cni_version, "0.4.0"):
            prev = self._cached_result(conflist, rt)
        self._del_chain(conflist, rt, prev)
        cache.delete(self.cache_dir, conflist.name, rt.container_id, rt.ifname)

    @_settling
    def check(self, conflist: NetworkConfigList, rt: RuntimeConf) -> None:
        self._validate(rt, conflist.name)
        if not versions.at_least(conflist.cni_version, "0.4.0"):
            raise CNIError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                "CHECK needs cniVersion >= 0.4.0",
                conflist.cni_version,
            )
        if conflist.disable_check:
            return
        prev = self._cached_result(conflist, rt)
        if prev is None:
            raise CNIError(
                ErrorCode.UNKNOWN_CONTAINER,
                "no cached result for this attachment",
                f"{conflist.name}/{rt.container_id}/{rt.ifname}",
            )
        for plugin in conflist.plugins:
            stdin = build_plugin_config(
                conflist, plugin, capability_args=rt.capability_args, prev_result=prev
            )
            self.exec_plugin(str(plugin["type"]), "CHECK", stdin, rt)

    @_settling
    def status(self, conflist: NetworkConfigList) -> None:
        if not versions.at_least(conflist.cni_version, "1.1.0"):
            raise CNIError(
                ErrorCode.INCOMPATIBLE_CNI_VERSION,
                "STATUS needs cniVersion >= 1.1.0",
                conflist.cni_version,
            )
        for plugin in conflist.plugins:
            stdin = build_plugin_config(conflist, plugin, capability_args={})
            self.exec_plugin(str(plugin["type"]), "STATUS", stdin, None)

    @_settling
    def gc(self, conflist: NetworkConfigList, valid: Collection[tuple[str, str]]) -> None:
        """Remove every attachment of this network not in ``valid`` (container id, ifname)."""
        if conflist.disable_gc:
            return
        self._validate(None)
        errors = self._gc_cached(conflist, frozenset(valid))
        if versions.at_least(conflist.cni_version, "1.1.0"):
            attachments = [{"containerID": c, "ifname": i} for c, i in sorted(valid)]
            extra = {"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments}
            for plugin in conflist.plugins:
                stdin = build_plugin_config(conflist, plugin, capability_args={}, extra=extra)
                try:
                    self.exec_plugin(str(plugin["type"]), "GC", stdin, None)
                except CNIError as err:
                    errors.append(f"{plugin['type']}: {err}")
        if errors:
            raise CNIError(ErrorCode.INTERNAL, "GC finished with errors", "; ".join(errors))

    def _gc_cached(
        self, conflist: NetworkConfigList, valid: frozenset[tuple[str, str]]
    ) -> list[str]:
        errors: list[str] = []
        try:
            for path in cache.remove_stale_temp_files(self.cache_dir):
                self.log(f"pycni: removed {path}, left by a writer that died")
        except CNIError as err:
            errors.append(str(err))
        for path, entry in cache.list_network(self.cache_dir, conflist.name):
            if entry is None:
                self.log(f"pycni: removing corrupt cache entry {path}")
                try:
                    cache.remove(path)
                except CNIError as err:
                    errors.append(str(err))
                continue
            if (entry.container_id, entry.ifname) in valid:
                continue
            rt = RuntimeConf(
                container_id=entry.container_id,
                netns=entry.netns,
                ifname=entry.ifname,
                cni_args=entry.cni_args,
                capability_args=entry.capability_args,
            )
            try:
                self.delete(conflist, rt)
            except CNIError as err:
                errors.append(f"DEL {entry.container_id}/{entry.ifname}: {err}")
        return errors
