"""The attestation service: evidence format v2, the simulated platform key, policy and HTTP API.

`evidence` is a pure parser and verifier, `platform` the simulated CPU key on disk, `policy` the
operator's JSON, `service` the HTTP front end that issues JWTs. Nothing here holds column keys,
and importing this package starts no server and opens no socket.
"""
