"""The AWS connection operations (Create, Describe, List, Update, Delete, and
DeauthorizeConnection), answered in AWS's shapes, and the helpers bus.broker.awsdestinations
shares with them.

A secret given here (ApiKeyValue, Password, ClientSecret) is sealed with BUS_SECRETS_KEY
(bus.secrets) before anything is stored, and never answered, logged or put in an error message:
Describe and List show only the non-secret parts, as AWS does. Connections declared in YAML are
read-only here (ManagedRuleException, as for YAML rules).
"""
from __future__ import annotations

import os
import re
import time
import uuid
from typing import Any, Literal

import msgspec
from aiohttp import web

from bus import identity, secrets
from bus.broker.awsapi import takes
from bus.broker.awsrules import _page, _Paged, _Request
from bus.broker.awsresources import broker_of, found, invalid, need, not_yaml, read, store, times
from bus.broker.envelope import Origin, RequestError
from bus.config.model import (
    ApiKeyAuth,
    Authorization,
    BasicAuth,
    Connection,
    HttpParameters,
    OAuthClientCredentials,
)
from bus.config.validate import Problem, validate_connection
from bus.store import resources

# AWS's quotas: 3,000 connections and 3,000 API destinations per account and Region.
MAX_API_CONNECTIONS = int(os.environ.get("BUS_MAX_API_CONNECTIONS", "3000"))
MAX_DESCRIPTION = 512
# AWS's ConnectionState values; busway's connections are only ever AUTHORIZED or DEAUTHORIZED.
CONNECTION_STATES = ("CREATING", "UPDATING", "DELETING", "AUTHORIZED", "DEAUTHORIZED", "AUTHORIZING",
                     "DEAUTHORIZING", "ACTIVE", "FAILED_CONNECTIVITY")
_CONNECTION_ARN = re.compile(r"^arn:aws[\w-]*:events:[^:]*:[^:]*:connection/([.\-_A-Za-z0-9]{1,64})/([-A-Za-z0-9]+)$")
_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # in a header value they would split the request
_HEADER_KEY = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]{1,512}$")

AuthKind = Literal["API_KEY", "BASIC", "OAUTH_CLIENT_CREDENTIALS"]
# AuthorizationType -> (the AuthParameters member that goes with it, that member in the request
# shape, the model's field).
_AUTH = {"API_KEY": ("ApiKeyAuthParameters", "api_key_auth_parameters", "api_key"),
         "BASIC": ("BasicAuthParameters", "basic_auth_parameters", "basic"),
         "OAUTH_CLIENT_CREDENTIALS": ("OAuthParameters", "oauth_parameters", "oauth_client_credentials")}


# --- request shapes (bus.broker.awsapi.takes checks the types; the operations read them typed) --

class ParameterMember(_Request):
    key: str | None = None
    value: str | None = None
    is_value_secret: bool | None = None


class HttpParametersMember(_Request):
    header_parameters: list[ParameterMember] | None = None
    query_string_parameters: list[ParameterMember] | None = None
    body_parameters: list[ParameterMember] | None = None


class ApiKeyMember(_Request):
    api_key_name: str | None = None
    api_key_value: str | None = None


class BasicMember(_Request):
    username: str | None = None
    password: str | None = None


class OAuthClientMember(_Request):
    client_id: str | None = msgspec.field(default=None, name="ClientID")
    client_secret: str | None = None


class OAuthMember(_Request):
    client_parameters: OAuthClientMember | None = None
    authorization_endpoint: str | None = None
    http_method: str | None = None
    oauth_http_parameters: HttpParametersMember | None = msgspec.field(default=None, name="OAuthHttpParameters")


class AuthParametersMember(_Request):
    api_key_auth_parameters: ApiKeyMember | None = None
    basic_auth_parameters: BasicMember | None = None
    oauth_parameters: OAuthMember | None = msgspec.field(default=None, name="OAuthParameters")
    invocation_http_parameters: HttpParametersMember | None = None
    connectivity_parameters: dict[str, Any] | None = None


class ConnectionRequest(_Request):
    """CreateConnection, UpdateConnection, DescribeConnection, DeleteConnection, DeauthorizeConnection."""
    name: str | None = None
    description: str | None = None
    authorization_type: str | None = None
    auth_parameters: AuthParametersMember | None = None
    invocation_connectivity_parameters: dict[str, Any] | None = None
    kms_key_identifier: str | None = None


class ListConnectionsRequest(_Paged):
    name_prefix: str | None = None
    connection_state: str | None = None


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise invalid("Name", "1 to 64 of A-Z a-z 0-9 . - _")
    return name


def _check_description(text: str | None) -> None:
    if text is not None and len(text) > MAX_DESCRIPTION:
        raise invalid("Description", f"at most {MAX_DESCRIPTION} characters")


# bus.config.validate's checks -> the AWS member each is about.
_MEMBER = {"connection_name": "Name", "api_destination_name": "Name", "authorization": "AuthParameters",
           "endpoint": "InvocationEndpoint", "method": "HttpMethod", "rate_limit": "InvocationRateLimitPerSecond",
           "connection": "ConnectionArn"}


def _first_problem(problems: list[Problem]) -> None:
    """AWS answers one error: the first, in AWS's words (the member) with validate's reason."""
    if problems:
        p = problems[0]
        raise invalid(_MEMBER.get(p.check, p.check), p.message)


# --- the secret-bearing parts --------------------------------------------------------------

def _seal(member: str, secret: str | None) -> str | None:
    """A secret as stored: sealed. Its value is never in a message, only its member's name."""
    if secret is None:
        return None
    if not 1 <= len(secret) <= 512 or _CONTROL.search(secret):
        raise invalid(member, "1 to 512 characters, no control characters")
    try:
        return secrets.seal(secret)
    except secrets.SecretsUnavailable as exc:
        raise RequestError("ValidationException", f"{member} cannot be kept: {exc}") from None


def _plain(member: str, value: str | None) -> str | None:
    if value is not None and (not 1 <= len(value) <= 512 or _CONTROL.search(value)):
        raise invalid(member, "1 to 512 characters, no control characters")
    return value


def _http_parameters(member: str, given: HttpParametersMember | None) -> HttpParameters | None:
    """AWS's key/value lists as the model's dicts. busway keeps no secret parameters (the model has
    nowhere to seal them) and no body parameters: both are refused by name, not dropped."""
    if given is None:
        return None
    if given.body_parameters:
        raise invalid(f"{member}.BodyParameters", "busway does not send body parameters")
    out: dict[str, dict[str, str]] = {}
    for name, items in (("HeaderParameters", given.header_parameters), ("QueryStringParameters", given.query_string_parameters)):
        values: dict[str, str] = {}
        for item in items or []:
            where = f"{member}.{name}"
            if item.is_value_secret:
                raise invalid(where, "busway keeps no secret parameters (IsValueSecret); put the secret in the authorization")
            if not item.key or (name == "HeaderParameters" and not _HEADER_KEY.match(item.key)) or _CONTROL.search(item.key):
                raise invalid(where, "each needs a Key (a header name for headers)")
            values[item.key] = _plain(where, item.value) if item.value else ""
        out[name] = values
    return HttpParameters(header_parameters=out.get("HeaderParameters", {}),
                          query_string_parameters=out.get("QueryStringParameters", {}))


def _auth_kind(a: Authorization) -> AuthKind:
    return "API_KEY" if a.api_key else "BASIC" if a.basic else "OAUTH_CLIENT_CREDENTIALS"


def _authorization(kind: str | None, params: AuthParametersMember, old: Authorization | None) -> Authorization:
    """The authorization a Create (old None) or Update asks for. An Update of the same kind changes
    only the members it gives (a secret left out is kept, sealed as it was); a new kind needs all."""
    kind = kind or (_auth_kind(old) if old else None)
    if kind not in _AUTH:
        raise invalid("AuthorizationType", f"one of {', '.join(_AUTH)}")
    member, attr, field = _AUTH[kind]
    others = [m for k, (m, a, _) in _AUTH.items() if k != kind and getattr(params, a) is not None]
    if others:  # AWS: exactly one kind of authorization
        raise invalid("AuthParameters", f"{others[0]} does not go with AuthorizationType {kind}")
    kept = getattr(old, field) if old is not None else None  # same kind: what the update leaves as it was
    if kept is None and getattr(params, attr) is None:
        raise RequestError("ValidationException", f"Parameter AuthParameters.{member} is required for AuthorizationType {kind}.")
    if kind == "API_KEY":
        auth = _api_key(params.api_key_auth_parameters, kept)
    elif kind == "BASIC":
        auth = _basic(params.basic_auth_parameters, kept)
    else:
        auth = _oauth(params.oauth_parameters, kept)
    return Authorization(**{field: auth})


def _api_key(p: ApiKeyMember | None, kept: ApiKeyAuth | None) -> ApiKeyAuth:
    p = p or ApiKeyMember()
    header = p.api_key_name if p.api_key_name is not None else (kept.header if kept else None)
    sealed = _seal("ApiKeyValue", p.api_key_value) or (kept.value_sealed if kept else None)
    if kept is None:
        need("ApiKeyAuthParameters.ApiKeyValue", sealed)
    return ApiKeyAuth(header=_plain("ApiKeyName", need("ApiKeyAuthParameters.ApiKeyName", header)), value_sealed=sealed)


def _basic(p: BasicMember | None, kept: BasicAuth | None) -> BasicAuth:
    p = p or BasicMember()
    username = p.username if p.username is not None else (kept.username if kept else None)
    sealed = _seal("Password", p.password) or (kept.password_sealed if kept else None)
    if kept is None:
        need("BasicAuthParameters.Password", sealed)
    username = _plain("Username", need("BasicAuthParameters.Username", username))
    if ":" in username:  # Basic puts "username:password" together: a colon would move the split
        raise invalid("Username", "no ':'")
    return BasicAuth(username=username, password_sealed=sealed)


def _oauth(p: OAuthMember | None, kept: OAuthClientCredentials | None) -> OAuthClientCredentials:
    p = p or OAuthMember()
    client = p.client_parameters or OAuthClientMember()
    client_id = client.client_id if client.client_id is not None else (kept.client_id if kept else None)
    sealed = _seal("ClientSecret", client.client_secret) or (kept.client_secret_sealed if kept else None)
    if kept is None:
        need("OAuthParameters.ClientParameters.ClientSecret", sealed)
    method = p.http_method or (kept.http_method if kept else None)
    if need("OAuthParameters.HttpMethod", method) not in ("GET", "POST", "PUT"):
        raise invalid("OAuthParameters.HttpMethod", "one of GET, POST, PUT")
    extra = _http_parameters("OAuthParameters.OAuthHttpParameters", p.oauth_http_parameters)
    return OAuthClientCredentials(
        token_url=need("OAuthParameters.AuthorizationEndpoint", p.authorization_endpoint or (kept.token_url if kept else None)),
        client_id=_plain("ClientID", need("OAuthParameters.ClientParameters.ClientID", client_id)),
        client_secret_sealed=sealed, http_method=method,
        oauth_http_parameters=extra if p.oauth_http_parameters is not None else (kept.oauth_http_parameters if kept else None))


def _has_secret(a: Authorization) -> bool:
    part = a.api_key or a.basic or a.oauth_client_credentials
    return any(getattr(part, f, None) for f in ("value_sealed", "password_sealed", "client_secret_sealed"))


def _refuse_unsupported(req: ConnectionRequest) -> None:
    if req.kms_key_identifier is not None:
        raise invalid("KmsKeyIdentifier", "busway seals secrets with BUS_SECRETS_KEY")
    if req.invocation_connectivity_parameters is not None or (req.auth_parameters and req.auth_parameters.connectivity_parameters):
        raise invalid("InvocationConnectivityParameters", "busway's workers reach endpoints directly")


# --- how AWS shows a connection ----------------------------------------------------------------

def _state(c: Connection) -> str:
    return "DEAUTHORIZED" if c.deauthorized else "AUTHORIZED"


def _connection_summary(broker, origin: Origin, c: Connection, state: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ConnectionArn": identity.connection_arn(origin, c.name, c.uuid),
                           "ConnectionState": state or _state(c), **times(broker, c.created, c.modified)}
    if not c.deauthorized:
        # busway keeps no separate authorization time: its secrets were last set with the last change
        out["LastAuthorizedTime"] = out["LastModifiedTime"]
    return out


def _connection_item(broker, origin: Origin, c: Connection) -> dict[str, Any]:
    return {"Name": c.name, "AuthorizationType": _auth_kind(c.authorization), **_connection_summary(broker, origin, c)}


def _http_view(p: HttpParameters | None) -> dict[str, Any] | None:
    if p is None:
        return None
    out = {}
    for member, values in (("HeaderParameters", p.header_parameters), ("QueryStringParameters", p.query_string_parameters)):
        if values:
            out[member] = [{"Key": k, "Value": v, "IsValueSecret": False} for k, v in values.items()]
    return out


def _auth_view(c: Connection) -> dict[str, Any]:
    """The non-secret parts only: a header or user name, a client id, an endpoint. Never a secret,
    sealed or not, and never the name of the environment variable a YAML secret comes from."""
    a = c.authorization
    out: dict[str, Any] = {}
    if a.api_key:
        out["ApiKeyAuthParameters"] = {"ApiKeyName": a.api_key.header}
    elif a.basic:
        out["BasicAuthParameters"] = {"Username": a.basic.username}
    elif a.oauth_client_credentials:
        o = a.oauth_client_credentials
        view: dict[str, Any] = {"ClientParameters": {"ClientID": o.client_id}, "AuthorizationEndpoint": o.token_url,
                                "HttpMethod": o.http_method}
        if (extra := _http_view(o.oauth_http_parameters)) is not None:
            view["OAuthHttpParameters"] = extra
        out["OAuthParameters"] = view
    if (extra := _http_view(c.invocation_http_parameters)) is not None:
        out["InvocationHttpParameters"] = extra
    return out


# --- connections -----------------------------------------------------------------------------

def _connection(broker, name: Any) -> Connection:
    return found(broker.declared.connections, name, "Connection")


def _api_connection(broker, name: Any) -> Connection:
    c = _connection(broker, name)
    not_yaml(broker.yaml_config.connections, c.name, "Connection")
    return c


@takes(ConnectionRequest)
async def create_connection(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: ConnectionRequest = read(body, ConnectionRequest)
    name = _check_name(req.name)
    _check_description(req.description)
    _refuse_unsupported(req)
    params = need("AuthParameters", req.auth_parameters)
    await broker.reload_resources()
    if name in broker.declared.connections:
        raise RequestError("ResourceAlreadyExistsException", f"Connection {name} already exists.")
    now = time.time()
    # Built (and its secret sealed) before anything is stored: a missing BUS_SECRETS_KEY stores nothing.
    c = Connection(name=name, description=req.description or "", uuid=str(uuid.uuid4()), created=now, modified=now,
                   authorization=_authorization(need("AuthorizationType", req.authorization_type), params, None),
                   invocation_http_parameters=_http_parameters("InvocationHttpParameters", params.invocation_http_parameters))
    _first_problem(validate_connection(c))
    try:
        await store(broker, lambda: resources.create(broker.redis, c, cap=MAX_API_CONNECTIONS))
    except resources.Exists:
        raise RequestError("ResourceAlreadyExistsException", f"Connection {name} already exists.") from None
    except resources.OverQuota:
        raise RequestError("LimitExceededException", f"The requested resource exceeds the maximum number allowed: "
                                                     f"at most {MAX_API_CONNECTIONS} connections.") from None
    return _connection_summary(broker, origin, c)


@takes(ConnectionRequest)
async def describe_connection(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    c = _connection(broker, body.get("Name"))
    out = {**_connection_item(broker, origin, c), "AuthParameters": _auth_view(c)}
    if c.description:
        out["Description"] = c.description
    if c.deauthorized:
        out["StateReason"] = "Deauthorized by DeauthorizeConnection: update it with new secrets."
    return out


@takes(ListConnectionsRequest)
async def list_connections(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    prefix, state = body.get("NamePrefix") or "", body.get("ConnectionState")
    if state is not None and state not in CONNECTION_STATES:
        raise invalid("ConnectionState", f"one of {', '.join(CONNECTION_STATES)}")
    items = [_connection_item(broker, origin, c) for c in sorted(broker.declared.connections.values(), key=lambda c: c.name)
             if c.name.startswith(prefix) and (state is None or _state(c) == state)]
    return _page(items, body, "Connections")


@takes(ConnectionRequest)
async def update_connection(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    req: ConnectionRequest = read(body, ConnectionRequest)
    _check_description(req.description)
    _refuse_unsupported(req)
    await broker.reload_resources()
    old = _api_connection(broker, req.name)
    params = req.auth_parameters or AuthParametersMember()
    same_kind = req.authorization_type in (None, _auth_kind(old.authorization))
    authorization = _authorization(req.authorization_type, params, old.authorization if same_kind else None)
    new = msgspec.structs.replace(
        old, authorization=authorization, modified=time.time(), deauthorized=not _has_secret(authorization),
        description=old.description if req.description is None else req.description,
        invocation_http_parameters=(old.invocation_http_parameters if params.invocation_http_parameters is None else
                                    _http_parameters("InvocationHttpParameters", params.invocation_http_parameters)))
    if not new.deauthorized:  # a deauthorized one has no secret until an update gives it one
        _first_problem(validate_connection(new))
    await store(broker, lambda: resources.update(broker.redis, old, new))
    return _connection_summary(broker, origin, new)


@takes(ConnectionRequest)
async def deauthorize_connection(request: web.Request, body: dict, origin: Origin) -> dict:
    """AWS: removes the authorization's secret; requests fail until an update gives it a new one."""
    broker = broker_of(request)
    await broker.reload_resources()
    old = _api_connection(broker, body.get("Name"))
    a = old.authorization
    cleared = Authorization(
        api_key=a.api_key and msgspec.structs.replace(a.api_key, value_sealed=None),
        basic=a.basic and msgspec.structs.replace(a.basic, password_sealed=None),
        oauth_client_credentials=a.oauth_client_credentials and msgspec.structs.replace(
            a.oauth_client_credentials, client_secret_sealed=None))
    new = msgspec.structs.replace(old, authorization=cleared, deauthorized=True, modified=time.time())
    await store(broker, lambda: resources.update(broker.redis, old, new))
    return _connection_summary(broker, origin, new)


@takes(ConnectionRequest)
async def delete_connection(request: web.Request, body: dict, origin: Origin) -> dict:
    broker = broker_of(request)
    await broker.reload_resources()
    c = _api_connection(broker, body.get("Name"))
    users = sorted(d.name for d in broker.declared.api_destinations.values() if d.connection == c.name)
    in_use = RequestError("ValidationException", f"Connection {c.name} is used by API destination(s) "
                                                 f"{', '.join(users) or '(another broker)'}; delete or update them first.")
    if users:
        raise in_use
    try:
        await store(broker, lambda: resources.delete(broker.redis, "connection", c.name))
    except resources.NotFound:
        raise RequestError("ResourceNotFoundException", f"Connection '{c.name}' does not exist.") from None
    except resources.InUse:
        raise in_use from None
    return _connection_summary(broker, origin, c, state="DELETING")  # AWS answers the state it is going into


OPERATIONS = {
    "CreateConnection": create_connection, "DescribeConnection": describe_connection,
    "ListConnections": list_connections, "UpdateConnection": update_connection,
    "DeleteConnection": delete_connection, "DeauthorizeConnection": deauthorize_connection,
}
