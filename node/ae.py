# The public Application Entity: pynetdicom's ApplicationEntity contract over our own core.
#
# Rules: attributes, defaults and callbacks as in ../shared/DESIGN.md (the seed's API). One
# background event loop thread per AE serves the SCP side and every SCU association; the
# blocking methods submit coroutines to it. Service callbacks run through the dispatcher
# seam (node.dispatch): in-process threads for workers=0; association-level callbacks run on
# the loop because they decide what goes on the wire.
from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any

from node import evt
from node.acceptor.server import AcceptorServer
from node.acse.contexts import PresentationContext, validate_uid
from node.ae_acceptor import server_settings
from node.ae_requestor import associate_request
from node.ae_settings import ValidatedSettings, checked_title
from node.cluster import LocalCluster, importable_name
from node.local import ThreadDispatcher
from node.observability import HealthEndpoint, ServerObserver
from node.presets import DEFAULT_TRANSFER_SYNTAXES, build_context
from node.scu.association import ClientSettings, open_association
from node.scu.services import Association, AsyncAssociation, LoopThread
from node.ul.items import RoleSelectionSubItem
from workers.handlers.common import SERVICE_CALLBACKS, Handlers

if TYPE_CHECKING:
    import ssl as ssl_module
    from collections.abc import Callable, Iterable, Sequence

log = logging.getLogger("dicomnode.ae")

#: Our implementation class UID (a UUID-derived 2.25 root) and version name (PS3.7 D.3.3.2).
IMPLEMENTATION_CLASS_UID = "2.25.283479113923592446473716104451470361611"
IMPLEMENTATION_VERSION_NAME = "DICOMNODE_010"
PYNETDICOM_IMPLEMENTATION_UID = IMPLEMENTATION_CLASS_UID

_SERVICE_CALLBACKS = SERVICE_CALLBACKS


def build_role(
    sop_class_uid: str, scu_role: bool = False, scp_role: bool = False
) -> RoleSelectionSubItem:
    """An SCP/SCU Role Selection item for `associate(ext_neg=[...])` (PS3.7 D.3.3.4)."""
    return RoleSelectionSubItem(str(validate_uid(str(sop_class_uid))), scu_role, scp_role)


class ApplicationEntity(ValidatedSettings):
    """A DICOM Application Entity: SCU and SCP (pynetdicom's ApplicationEntity contract)."""

    def __init__(
        self, ae_title: str | bytes = b"PYNETDICOM", port: int = 0, bind_addr: str = ""
    ) -> None:
        self._ae_title = checked_title(ae_title, "ae_title")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer 0-65535, not {port!r}")
        self.port = port
        self.bind_addr = bind_addr
        self._acse_timeout: float | None = 30.0
        self._dimse_timeout: float | None = None
        self._network_timeout: float | None = 60.0
        self._maximum_associations = 2
        self._maximum_pdu_size = 16382
        self._require_calling_aet: list[bytes] = []
        self.require_called_aet = False
        self._calling_aet_networks: dict[str, list[str]] = {}
        self._maximum_associations_per_aet: int | None = None
        self._maximum_dataset_size: int | None = None
        #: Reject associations that propose no User Identity (PS3.7 D.3.3.7); the identity
        #: itself is checked by on_user_identity / EVT_USER_ID.
        self.require_user_identity = False
        self._implementation_class_uid = IMPLEMENTATION_CLASS_UID
        self._implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME
        self._supported_contexts: dict[str, PresentationContext] = {}
        self._requested_contexts: list[PresentationContext] = []
        for name in _SERVICE_CALLBACKS:
            setattr(self, name, None)
        self.on_association_requested: Callable[..., Any] | None = None
        self.on_association_accepted: Callable[..., Any] | None = None
        self.on_association_rejected: Callable[..., Any] | None = None
        self.on_association_released: Callable[..., Any] | None = None
        self.on_association_aborted: Callable[..., Any] | None = None
        self.on_async_ops_window: Callable[[int, int], tuple[int, int]] | None = None
        self.on_sop_class_extended: Callable[[dict[str, bytes]], dict[str, bytes]] | None = None
        #: Answer relational-queries to C-FIND SOP Class Extended Negotiation (PS3.4 C.5.1)
        #: when `on_sop_class_extended` is not set: only true when the built-in archive
        #: (workers.handlers.qr) serves C-FIND, which matches relationally when agreed.
        self.relational_queries = False
        self.on_sop_class_common_extended: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.on_user_identity: Callable[..., Any] | None = None
        self.on_make_connection: Callable[..., Any] | None = None
        self.on_receive_connection: Callable[..., Any] | None = None
        self.maximum_operations_performed = 1
        self.maximum_operations_invoked = 1
        #: AE title -> (host, port) of C-MOVE destinations.
        self.known_aes: dict[str, tuple[str, int]] = {}
        #: Built-in storage used when no C-STORE callback is set (a workers.store FileStore).
        self.file_store: Any = None
        #: The Query/Retrieve index (workers.store.index.Index) served when no C-FIND/GET/MOVE
        #: callback is set; an IndexedFileStore brings its own.
        self.index: Any = None
        self._event_handlers: dict[evt.EventType, list[Callable[..., Any]]] = {}
        self._runner: LoopThread | None = None
        self._server: AcceptorServer | None = None
        self._dispatcher: Any = None
        self._client_associations: list[Association] = []
        #: True: the acceptor answers C-ECHO itself; False: always the handlers; None (default):
        #: itself when no echo callback is set and handlers run in this process.
        self.local_echo: bool | None = None
        #: With a broker: a directory on the workers' file system (their data directory's
        #: spool/) where C-STORE data sets are handed to them as files instead of through the
        #: sockets (node.part10); None: always by socket. start(workers=N) sets it itself.
        self.handoff_directory: str | None = None
        self._cluster: Any = None
        self._health: Any = None
        self._draining = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    # --- presentation contexts --------------------------------------------------------------

    @property
    def supported_contexts(self) -> list[PresentationContext]:
        return list(self._supported_contexts.values())

    @supported_contexts.setter
    def supported_contexts(self, contexts: Iterable[PresentationContext]) -> None:
        self._supported_contexts = {}
        for context in contexts:
            self.add_supported_context(
                context.abstract_syntax,
                context.transfer_syntaxes,
                scu_role=context.scu_role,
                scp_role=context.scp_role,
            )

    @property
    def requested_contexts(self) -> list[PresentationContext]:
        return list(self._requested_contexts)

    @requested_contexts.setter
    def requested_contexts(self, contexts: Iterable[PresentationContext]) -> None:
        self._requested_contexts = []
        for context in contexts:
            self.add_requested_context(context.abstract_syntax, context.transfer_syntaxes)

    def add_supported_context(
        self,
        abstract_syntax: str,
        transfer_syntax: str | Sequence[str] = DEFAULT_TRANSFER_SYNTAXES,
        scu_role: bool | None = None,
        scp_role: bool | None = None,
    ) -> None:
        """Support `abstract_syntax` as acceptor; transfer syntaxes merge with earlier ones."""
        new = build_context(abstract_syntax, transfer_syntax, scu_role=scu_role, scp_role=scp_role)
        old = self._supported_contexts.get(new.abstract_syntax)
        if old is not None:
            merged = old.transfer_syntaxes + tuple(
                ts for ts in new.transfer_syntaxes if ts not in old.transfer_syntaxes
            )
            new = build_context(
                new.abstract_syntax,
                merged,
                scu_role=scu_role if scu_role is not None else old.scu_role,
                scp_role=scp_role if scp_role is not None else old.scp_role,
            )
        self._supported_contexts[new.abstract_syntax] = new

    def remove_supported_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] | None = None
    ) -> None:
        """Stop supporting `abstract_syntax` (or only some of its transfer syntaxes)."""
        old = self._supported_contexts.get(str(abstract_syntax))
        if old is None:
            return
        if transfer_syntax is None:
            del self._supported_contexts[old.abstract_syntax]
            return
        remove = {transfer_syntax} if isinstance(transfer_syntax, str) else set(transfer_syntax)
        keep = tuple(ts for ts in old.transfer_syntaxes if ts not in remove)
        if keep:
            self._supported_contexts[old.abstract_syntax] = build_context(
                old.abstract_syntax, keep, scu_role=old.scu_role, scp_role=old.scp_role
            )
        else:
            del self._supported_contexts[old.abstract_syntax]

    def add_requested_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] = DEFAULT_TRANSFER_SYNTAXES
    ) -> None:
        """Propose `abstract_syntax` when associating (at most 128 contexts, PS3.8 9.3.2.2)."""
        if len(self._requested_contexts) >= 128:
            raise ValueError("at most 128 requested presentation contexts (PS3.8 9.3.2.2)")
        self._requested_contexts.append(build_context(abstract_syntax, transfer_syntax))

    def remove_requested_context(
        self, abstract_syntax: str, transfer_syntax: str | Sequence[str] | None = None
    ) -> None:
        """Stop proposing `abstract_syntax` (or only some of its transfer syntaxes)."""
        remove = (
            None
            if transfer_syntax is None
            else ({transfer_syntax} if isinstance(transfer_syntax, str) else set(transfer_syntax))
        )
        kept: list[PresentationContext] = []
        for context in self._requested_contexts:
            if context.abstract_syntax != str(abstract_syntax):
                kept.append(context)
            elif remove is not None:
                left = tuple(ts for ts in context.transfer_syntaxes if ts not in remove)
                if left:
                    kept.append(build_context(context.abstract_syntax, left))
        self._requested_contexts = kept

    # --- handlers ---------------------------------------------------------------------------

    def bind(self, event: evt.EventType, handler: Callable[..., Any]) -> None:
        """Bind an event handler (pynetdicom's `evt_handlers` style)."""
        handlers = self._event_handlers.setdefault(event, [])
        if event.is_intervention:
            handlers.clear()
        handlers.append(handler)

    def unbind(self, event: evt.EventType, handler: Callable[..., Any]) -> None:
        handlers = self._event_handlers.get(event, [])
        if handler in handlers:
            handlers.remove(handler)

    def _handlers(self, extra: Sequence[tuple[Any, ...]] = ()) -> Handlers:
        events: dict[evt.EventType, Callable[..., Any]] = {
            event: callbacks[-1]
            for event, callbacks in self._event_handlers.items()
            if callbacks and event.is_intervention
        }
        for item in extra:
            if item[0].is_intervention:
                events[item[0]] = item[1]
        handlers = Handlers(
            events=events,
            known_aes=dict(self.known_aes),
            local_ae_title=self._ae_title,
            maximum_pdu_size=self._maximum_pdu_size,
            file_store=self.file_store,
            index=self.index,
        )
        for name in _SERVICE_CALLBACKS:
            setattr(handlers, name, getattr(self, name))
        return handlers

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _SERVICE_CALLBACKS or name in ("file_store", "index"):
            dispatcher = self.__dict__.get("_dispatcher")
            if isinstance(dispatcher, ThreadDispatcher):
                setattr(dispatcher.handlers, name, value)

    def _notify(
        self, event: evt.EventType, legacy: Callable[..., Any] | None, argument: Any
    ) -> None:
        for handler in self._event_handlers.get(event, []):
            handler(argument)
        if legacy is not None:
            legacy(argument)

    # --- acceptor ---------------------------------------------------------------------------

    def _runner_loop(self) -> LoopThread:
        with self._lock:
            if self._runner is None:
                self._runner = LoopThread()
            return self._runner

    def start(
        self,
        block: bool = True,
        *,
        workers: int = 0,
        evt_handlers: Sequence[tuple[Any, ...]] = (),
        ssl_context: ssl_module.SSLContext | None = None,
        reuse_port: bool = False,
        broker: str | None = None,
        metrics_port: int | None = None,
        curve: dict[str, bytes] | None = None,
        workers_endpoint: str | None = None,
    ) -> None:
        """Listen on `bind_addr:port` as SCP. Blocks until stop() unless block=False.

        `ssl_context` (a server context, see node.tls.server_context) makes the port speak
        DICOM over TLS (PS3.15 B.x). `curve` ({"public", "secret", "server"} keys, see
        broker.curve.client_keys) encrypts and authenticates the link to `broker`.

        With workers=0 (and no broker) the service callbacks run on a thread pool of this
        process. With `broker`, requests go to the worker processes behind that ZeroMQ
        broker (the `acceptor` role). With `workers_endpoint` instead, this process binds
        that endpoint for the workers and routes to them itself (broker.embedded: no broker
        process between them; one acceptor per pool of workers). With workers=N, N worker
        processes are started on this host, connected so, and the AE's callbacks run in them
        (they must be importable module-level functions).
        """
        if workers < 0:
            raise ValueError(f"workers must be >= 0, not {workers}")
        if not self._supported_contexts:
            raise ValueError("no supported presentation contexts: add_supported_context() first")
        if self._server is not None:
            raise RuntimeError("this AE is already listening")
        for item in evt_handlers:
            self.bind(item[0], item[1])
        if workers and broker is None and workers_endpoint is None:
            workers_endpoint = self._start_local_cluster(workers)
        runner = self._runner_loop()
        self._stopped.clear()
        self._dispatcher = self._new_dispatcher(broker, workers_endpoint, curve)
        observer = None
        if metrics_port is not None:
            observer = ServerObserver()
            self._health = HealthEndpoint(metrics_port, self._readiness)
        server = AcceptorServer(
            server_settings(
                self,
                self._dispatcher,
                remote=broker is not None or workers_endpoint is not None,
                observer=observer,
            )
        )

        async def launch() -> None:
            assert self._dispatcher is not None  # noqa: S101
            await self._dispatcher.start()
            await server.start(
                self.bind_addr or "0.0.0.0",  # noqa: S104 - listening on all is the default
                self.port,
                ssl=ssl_context,
                reuse_port=reuse_port,
            )

        runner.run(launch())
        self._server = server
        self.port = server.port
        log.info("%s listening on %s:%d", self._ae_title, self.bind_addr or "*", self.port)
        if block:
            try:
                while not self._stopped.wait(0.5):
                    pass
            except KeyboardInterrupt:
                self.stop()

    def _new_dispatcher(
        self, broker: str | None, workers_endpoint: str | None, curve: dict[str, bytes] | None
    ) -> Any:
        """Requests to the workers behind `broker` or on `workers_endpoint`, or to a thread
        pool of this process."""
        if broker is not None or workers_endpoint is not None:
            from node.acceptor.bridge import ZmqDispatcher  # only a clustered AE loads ZeroMQ

            return ZmqDispatcher(
                broker,
                workers_endpoint=workers_endpoint,
                curve=curve,
                handoff_directory=self.handoff_directory,
            )
        return ThreadDispatcher(
            self._handlers(),
            threads=max(4, self._maximum_associations * 2),
            suboperation_timeout=self._dimse_timeout or 60.0,
        )

    def _start_local_cluster(self, workers: int) -> str:
        """Start `workers` worker processes running this AE's callbacks; returns the endpoint
        they connect to, which this AE binds (the routing runs here)."""
        callbacks = {
            name: importable_name(getattr(self, name), name)
            for name in _SERVICE_CALLBACKS
            if getattr(self, name) is not None
        }
        events = {
            event.name: importable_name(handlers[-1], event.name)
            for event, handlers in self._event_handlers.items()
            if handlers and event.is_intervention and event in evt.DIMSE_EVENTS
        }
        store = self.file_store
        cluster = LocalCluster(
            workers,
            callbacks=callbacks,
            events=events,
            data_dir=str(store.root) if store is not None else None,
            ae_title=self._ae_title,
            known_aes=self.known_aes,
        )
        cluster.start()
        self._cluster = cluster
        if store is not None and self.handoff_directory is None:
            self.handoff_directory = str(store.spool_directory)
        return cluster.backend

    def _readiness(self) -> tuple[bool, str]:
        if self._draining:
            return False, "draining"
        if self._server is None:
            return False, "not listening"
        readiness = getattr(self._dispatcher, "readiness", None)
        return readiness() if readiness is not None else (True, "ready")

    def drain(self, grace: float = 30.0) -> None:
        """Graceful stop: readiness goes false, no new associations, the open ones get up to
        `grace` seconds to finish, then stop()."""
        self._draining = True
        server, runner = self._server, self._runner
        if server is not None and runner is not None:

            async def finish() -> None:
                await server.close(grace=grace)

            try:
                runner.run(finish(), grace + 30)
            except Exception:
                log.exception("draining failed")
        self.stop()

    def stop(self) -> None:
        """Stop listening; release-or-abort open associations; stop the loop thread."""
        server, self._server = self._server, None
        dispatcher, self._dispatcher = self._dispatcher, None
        runner = self._runner
        if runner is not None:
            for association in list(self._client_associations):
                if association.is_established:
                    try:
                        association.release()
                    except Exception:  # noqa: BLE001 - shutting down anyway
                        association.abort()
            self._client_associations.clear()

            async def shutdown() -> None:
                if server is not None:
                    await server.close(grace=1.0)
                if dispatcher is not None:
                    await dispatcher.close()

            runner.run(shutdown(), 30)
            runner.stop()
            self._runner = None
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.stop()
        health, self._health = self._health, None
        if health is not None:
            health.close()
        self._stopped.set()

    quit = stop

    def shutdown(self) -> None:
        self.stop()

    @property
    def active_associations(self) -> list[Any]:
        """Associations open right now, as acceptor and as requestor."""
        server_side: list[Any] = list(self._server.associations) if self._server else []
        self.cleanup_associations()
        return server_side + [a for a in self._client_associations if a.is_established]

    def cleanup_associations(self) -> None:
        """Forget requestor associations that have ended."""
        self._client_associations = [a for a in self._client_associations if a.is_established]

    # --- requestor --------------------------------------------------------------------------

    def associate(
        self,
        addr: str,
        port: int,
        contexts: Sequence[PresentationContext] | None = None,
        ae_title: str | bytes = b"ANY-SCP",
        max_pdu: int = 16382,
        ext_neg: Sequence[Any] | None = None,
        evt_handlers: Sequence[tuple[Any, ...]] = (),
        tls_args: tuple[ssl_module.SSLContext, str | None] | None = None,
        bind_address: tuple[str, int] | None = None,
    ) -> Association:
        """Request an association with the peer at addr:port (blocking, seed API).

        `tls_args` = (client SSL context, expected server host name or None for `addr`) for
        DICOM over TLS; `bind_address` = (local address, local port or 0) for our end.
        """
        runner = self._runner_loop()
        inner = runner.run(
            self.associate_async(
                addr,
                port,
                contexts,
                ae_title,
                max_pdu,
                ext_neg,
                evt_handlers,
                tls_args,
                bind_address=bind_address,
            )
        )
        association = Association(inner, runner)
        if association.is_established:
            self._client_associations.append(association)
        return association

    async def associate_async(
        self,
        addr: str,
        port: int,
        contexts: Sequence[PresentationContext] | None = None,
        ae_title: str | bytes = b"ANY-SCP",
        max_pdu: int = 16382,
        ext_neg: Sequence[Any] | None = None,
        evt_handlers: Sequence[tuple[Any, ...]] = (),
        tls_args: tuple[ssl_module.SSLContext, str | None] | None = None,
        *,
        bind_address: tuple[str, int] | None = None,
    ) -> AsyncAssociation:
        """Request an association; usable on any event loop (`async with`)."""
        if not isinstance(addr, str):
            raise TypeError("addr must be a str")
        if not isinstance(port, int) or not 0 < port <= 65535:
            raise ValueError(f"port must be 1-65535, not {port!r}")
        proposed = list(contexts) if contexts is not None else list(self._requested_contexts)
        if not proposed:
            raise RuntimeError("no requested presentation contexts: add_requested_context() first")
        request = associate_request(
            calling_ae_title=self._ae_title,
            called_ae_title=checked_title(ae_title, "ae_title"),
            proposed=proposed,
            maximum_pdu_length=max_pdu,
            implementation_class_uid=self._implementation_class_uid,
            implementation_version_name=self._implementation_version_name,
            ext_neg=ext_neg or (),
        )
        settings = ClientSettings(
            acse_timeout=self._acse_timeout or 30.0,
            dimse_timeout=self._dimse_timeout,
            network_timeout=self._network_timeout,
            maximum_pdu_size=max_pdu,
            serve_requests=functools.partial(
                ThreadDispatcher, self._handlers(evt_handlers), threads=2
            ),
        )
        ssl_context, hostname = tls_args if tls_args else (None, None)
        if self.on_make_connection is not None:
            # on_make_connection((host, port)) may return {"ssl": SSLContext,
            # "server_hostname": str} to wrap the connection we are about to make (e.g. TLS)
            wrap = self.on_make_connection((addr, port)) or {}
            ssl_context = wrap.get("ssl", ssl_context)
            hostname = wrap.get("server_hostname", hostname)
        return await open_association(
            addr,
            port,
            request,
            settings,
            ssl=ssl_context,
            server_hostname=hostname or addr,
            local_addr=bind_address,
            cls=AsyncAssociation,
        )

    def __repr__(self) -> str:
        return f"ApplicationEntity(ae_title={self._ae_title!r}, port={self.port})"


AE = ApplicationEntity
