"""Every private name of a library that TaskHub's fast paths use, and nowhere else.

Each fast path skips some of a library's per-call work through names that library does
not promise to keep. They were written against, and are only used on:

- SQLAlchemy 2.1.9: ``greenlets`` (reused greenlets for ``greenlet_spawn``, through
  ``util.concurrency._concurrency_shim._AsyncIoGreenlet``), ``fair_pool`` (the pool's
  ``_queue_class``), ``driver_begin`` (the asyncpg adapter's ``_transaction`` and
  ``_start_transaction()``).
- SQLAlchemy 2.1.9 also: the ``__sqlalchemy_greenlet_provider__`` marker its ``await_``
  looks for on a greenlet (``greenlet_provider``).
- SQLAlchemy, undocumented though not underscored: ``greenlet_spawn``, ``await_`` and
  the pool queue base ``QueueCommon`` with ``Empty`` and ``Full``, re-exported below.
- FastAPI 0.163.2: ``planned_routes`` (``fastapi._compat``'s field helpers,
  ``dependencies.utils._solve_generator`` and ``get_dependant``, ``dependencies.models
  .Dependant``, the ``fastapi.params`` classes, and the request scope keys of its exit
  stacks).

:func:`enabled` is the one check: a path runs when its setting is on
(``TASKHUB_FAST_PATHS__<NAME>``, all of them off with ``TASKHUB_FAST_PATHS__ENABLED=false``)
and the installed library is the version it was written for. On any other version the
library's own behaviour is used, with one warning line per path; :func:`check` runs the
check for every path at start-up. ``make test-compat`` runs the API tests with every
path off.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol, TypeAlias, TypeGuard

from pydantic import BaseModel
from pydantic.fields import FieldInfo

# Not underscored but not documented either: SQLAlchemy's bridge between asyncio and its
# sync core (``greenlet_spawn``, ``await_``), which its own asyncio extension is built
# on, and its pool queues' base class and exceptions (``FairQueue``, the ``fair_pool``
# path). No fast path of their own: the rest of TaskHub reaches them through this
# module only, so a SQLAlchemy upgrade has one place to look.
from sqlalchemy.util import await_ as await_
from sqlalchemy.util import greenlet_spawn as greenlet_spawn
from sqlalchemy.util.queue import Empty as Empty
from sqlalchemy.util.queue import Full as Full
from sqlalchemy.util.queue import QueueCommon as QueueCommon

from taskhub_api.settings import get_settings

# FastAPI's resolved declaration of an endpoint or dependency
# (``fastapi.dependencies.models.Dependant``, not public API): untyped here, so that
# nothing that reaches this module through ``db`` imports FastAPI, even for typing.
Dependant: TypeAlias = Any


class ModelField(Protocol):
    """What the plan uses of FastAPI's private ``fastapi._compat.ModelField`` (a
    declared parameter or body)."""

    @property
    def name(self) -> str: ...
    @property
    def alias(self) -> str: ...
    @property
    def default(self) -> Any: ...
    @property
    def field_info(self) -> FieldInfo: ...

    def validate(
        self, value: Any, values: dict[str, Any], *, loc: tuple[int | str, ...]
    ) -> tuple[Any, list[Any]]: ...


log = logging.getLogger("taskhub.internals")


@dataclass(frozen=True, slots=True)
class FastPath:
    name: str  # its setting in FastPathSettings
    library: str
    written_for: str  # the version whose internals it uses
    does: str

    @property
    def installed(self) -> str:
        return version(self.library)


def _private(module: str) -> Any:
    """A library module holding private names, imported when first used: on a version
    without it the fast path is off before anything asks, and a service that reaches
    this module through ``db`` does not load FastAPI."""
    return importlib.import_module(module)


FAST_PATHS: dict[str, FastPath] = {
    path.name: path
    for path in (
        FastPath("greenlets", "SQLAlchemy", "2.1.9", "greenlet_spawn reuses its greenlets"),
        FastPath("fair_pool", "SQLAlchemy", "2.1.9", "pool checkouts served in arrival order"),
        FastPath(
            "driver_begin", "SQLAlchemy", "2.1.9", "driver statements begin with a bare BEGIN"
        ),
        FastPath("planned_routes", "FastAPI", "0.163.2", "route parameters planned at start-up"),
    )
}


@functools.cache
def enabled(name: str) -> bool:
    """Whether fast path ``name`` runs in this process (decided once, see the module)."""
    path = FAST_PATHS[name]
    settings = get_settings().fast_paths
    if not (settings.enabled and getattr(settings, name)):
        return False
    installed = path.installed
    if installed != path.written_for:
        log.warning(
            "fast path %s (%s) off: written for %s %s, %s is installed; using the library's own",
            name,
            path.does,
            path.library,
            path.written_for,
            installed,
        )
        return False
    return True


def check() -> dict[str, bool]:
    """Every fast path and whether it runs: at start-up, so a mismatch shows at once."""
    return {name: enabled(name) for name in FAST_PATHS}


# --- SQLAlchemy: greenlets ------------------------------------------------------------


def _concurrency() -> Any:
    concurrency = _private("sqlalchemy.util.concurrency")
    concurrency._concurrency_shim._initialize()
    return concurrency


def own_greenlet_class() -> type[Any]:
    """SQLAlchemy's own class (a global of its module, set when greenlet is imported)."""
    return vars(_concurrency())["_AsyncIoGreenlet"]  # type: ignore[no-any-return]


def greenlet_class() -> type[Any]:
    """The class ``greenlet_spawn`` runs its functions in."""
    return _concurrency()._concurrency_shim._AsyncIoGreenlet  # type: ignore[no-any-return]


def greenlet_provider(cls: type[Any]) -> type[Any]:
    """Marks a greenlet class as one SQLAlchemy's ``await_`` may switch out of (the
    marker it looks for in the current greenlet)."""
    cls.__sqlalchemy_greenlet_provider__ = True
    return cls


def set_greenlet_class(cls: type[Any] | None) -> None:
    """``greenlet_spawn`` runs its functions in ``cls``; None: SQLAlchemy's own."""
    concurrency = _concurrency()
    concurrency._concurrency_shim._AsyncIoGreenlet = cls or own_greenlet_class()


# --- SQLAlchemy: fair_pool ------------------------------------------------------------

# The class attribute a QueuePool builds its queue of idle connections from.
POOL_QUEUE_CLASS = "_queue_class"


def pool_queue(pool: Any) -> Any:
    """The queue of idle connections a QueuePool built."""
    return pool._pool


# --- SQLAlchemy: driver_begin ---------------------------------------------------------


async def begin_on_adapter(adapted: Any) -> None:
    """BEGIN on SQLAlchemy's asyncpg adapter connection, as its first statement would
    send it, unless it is in a transaction already."""
    if adapted._transaction is None:
        await adapted._start_transaction()


# --- FastAPI: planned_routes ----------------------------------------------------------

# The request scope keys of the exit stacks of FastAPI's request handling.
FUNCTION_EXIT_STACK = "fastapi_function_astack"
REQUEST_EXIT_STACK = "fastapi_inner_astack"


@functools.cache
def solve_generator() -> Callable[..., Any]:
    """FastAPI's own entry of a dependency that yields on an exit stack."""
    return _private("fastapi.dependencies.utils")._solve_generator  # type: ignore[no-any-return]


def missing_field_error(loc: tuple[str, ...]) -> Any:
    return _private("fastapi._compat").get_missing_field_error(loc=loc)


def model_fields(model: type[BaseModel]) -> list[ModelField]:
    return _private("fastapi._compat").get_cached_model_fields(model)  # type: ignore[no-any-return]


def is_sequence_annotation(annotation: Any) -> bool:
    return _private("fastapi._compat.shared").field_annotation_is_sequence(annotation)  # type: ignore[no-any-return]


def dependant(path: str, call: Callable[..., Any]) -> Dependant:
    """FastAPI's declaration of ``call`` as the endpoint of ``path``."""
    return _private("fastapi.dependencies.utils").get_dependant(path=path, call=call)


def is_json_body(info: FieldInfo) -> bool:
    """Whether a declared parameter is a plain ``Body()`` (not a form or a file)."""
    return type(info) is _private("fastapi.params").Body


def param_source(info: FieldInfo) -> str | None:
    """Where a declared path, query, header or cookie parameter is read from."""
    params = _private("fastapi.params")
    return info.in_.value if isinstance(info, params.Param) else None


def is_model(annotation: Any) -> TypeGuard[type[BaseModel]]:
    """Whether an annotation is a Pydantic model class (FastAPI's own test)."""
    return _private("fastapi._compat.shared").lenient_issubclass(annotation, BaseModel)  # type: ignore[no-any-return]
