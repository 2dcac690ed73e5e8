# What the AE hands its acceptor: the negotiation policy and the server settings, read from the
# AE's configuration (one snapshot per association for the policy, so changes to a running AE
# apply to the next association), and the association hooks that call the AE's callbacks.
#
# Rules: functions of the AE, no state of their own beyond the last policy built (kept while
# the AE's settings it was built from are unchanged); the AE stays the one place the settings
# live (pynetdicom's attribute contract).
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from node import evt
from node.acceptor.settings import AssociationHooks, ServerSettings
from node.acse.negotiation import AcceptorPolicy
from node.extended import relational_query_replies

if TYPE_CHECKING:
    from collections.abc import Callable

    from node.ae import ApplicationEntity
    from node.dispatch import Dispatcher
    from node.ul.items import UserIdentityRQSubItem


def _policy_arguments(ae: ApplicationEntity) -> dict[str, Any]:
    """What AcceptorPolicy is built from, read from the AE as values (the contexts are frozen;
    the user identity hook, a new closure each time, stands as whether one is wired)."""
    return {
        "ae_title": ae._ae_title,
        "supported_contexts": tuple(ae._supported_contexts.values()),
        "maximum_pdu_length": ae.maximum_pdu_size,
        "implementation_class_uid": ae.implementation_class_uid,
        "implementation_version_name": ae.implementation_version_name,
        "require_called_aet": ae.require_called_aet,
        "require_calling_aet": tuple(t.decode("ascii") for t in ae.require_calling_aet),
        "maximum_operations_performed": ae.maximum_operations_performed,
        "maximum_operations_invoked": ae.maximum_operations_invoked,
        "on_async_ops_window": ae.on_async_ops_window,
        "on_sop_class_extended": ae.on_sop_class_extended
        or (relational_query_replies if ae.relational_queries else None),
        "on_sop_class_common_extended": ae.on_sop_class_common_extended,
        "on_user_identity": ae.on_user_identity is not None
        or evt.EVT_USER_ID in ae._event_handlers,
        "calling_aet_networks": {
            title: tuple(networks) for title, networks in ae.calling_aet_networks.items()
        },
        "maximum_associations_per_aet": ae.maximum_associations_per_aet,
        "require_user_identity": ae.require_user_identity,
    }


def _policy_from(ae: ApplicationEntity, arguments: dict[str, Any]) -> AcceptorPolicy:
    identity = _user_identity_hook(ae) if arguments["on_user_identity"] else None
    return AcceptorPolicy(**{**arguments, "on_user_identity": identity})


def acceptor_policy(ae: ApplicationEntity) -> AcceptorPolicy:
    """The AE's negotiation policy as it stands now (node.acse.negotiation)."""
    return _policy_from(ae, _policy_arguments(ae))


def current_policy(ae: ApplicationEntity) -> Callable[[], AcceptorPolicy]:
    """acceptor_policy(ae) for each association, built again only when what it is built from
    changed (building and validating it is most of an association's negotiation)."""
    cached: list[tuple[dict[str, Any], AcceptorPolicy]] = []

    def policy() -> AcceptorPolicy:
        arguments = _policy_arguments(ae)
        if not cached or cached[0][0] != arguments:
            cached[:] = [(arguments, _policy_from(ae, arguments))]
        return cached[0][1]

    return policy


def _user_identity_hook(
    ae: ApplicationEntity,
) -> Callable[[UserIdentityRQSubItem], tuple[bool, bytes | None]]:
    """EVT_USER_ID's last handler, or else on_user_identity(type, primary, secondary, info)."""

    def check(item: UserIdentityRQSubItem) -> tuple[bool, bytes | None]:
        handlers = ae._event_handlers.get(evt.EVT_USER_ID)
        if handlers:
            result = handlers[-1](item)
        else:
            assert ae.on_user_identity is not None  # noqa: S101 - only wired when set
            result = ae.on_user_identity(
                item.identity_type, item.primary_field, item.secondary_field, {}
            )
        accepted, response = result
        return bool(accepted), response

    return check


def association_hooks(ae: ApplicationEntity) -> AssociationHooks:
    """Association events to the AE's bound handlers and on_association_* callbacks."""

    def hook(event: evt.EventType, name: str) -> Callable[[Any], None]:
        return lambda association: ae._notify(event, getattr(ae, name), association)

    return AssociationHooks(
        requested=[hook(evt.EVT_REQUESTED, "on_association_requested")],
        accepted=[hook(evt.EVT_ACCEPTED, "on_association_accepted")],
        rejected=[hook(evt.EVT_REJECTED, "on_association_rejected")],
        released=[hook(evt.EVT_RELEASED, "on_association_released")],
        aborted=[hook(evt.EVT_ABORTED, "on_association_aborted")],
    )


def echo_locally(ae: ApplicationEntity, remote: bool) -> bool:
    """Whether the acceptor answers C-ECHO itself: when told to (local_echo=True), or by
    default when no echo callback exists here and the handlers run in this process."""
    if ae.local_echo is not None:
        return bool(ae.local_echo)
    custom = getattr(ae, "on_c_echo", None) is not None or bool(
        ae._event_handlers.get(evt.EVT_C_ECHO)
    )
    return not remote and not custom


def server_settings(
    ae: ApplicationEntity, dispatcher: Dispatcher, *, remote: bool, observer: Any = None
) -> ServerSettings:
    """The acceptor's settings from the AE; `remote`: the handlers run behind a broker."""

    def on_connection(address: tuple[str, int]) -> Any:
        hook = ae.on_receive_connection  # returning False refuses the TCP connection
        return None if hook is None else hook(address)

    return ServerSettings(
        observer=observer,
        policy=current_policy(ae),
        dispatcher=dispatcher,
        maximum_associations=ae.maximum_associations,
        acse_timeout=ae.acse_timeout or 30.0,
        dimse_timeout=ae.dimse_timeout,
        network_timeout=ae.network_timeout,
        maximum_pdu_size=ae.maximum_pdu_size,
        maximum_dataset_size=ae.maximum_dataset_size,
        hooks=association_hooks(ae),
        local_echo=lambda: echo_locally(ae, remote),
        on_connection=on_connection,
    )
