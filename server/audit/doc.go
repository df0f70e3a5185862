// Package audit writes the server's audit log, SPIRE's audit_log_enabled:
// one structured INFO record per API call, or per item of a batch call,
// saying who called, what they asked for and how it ended, so a security
// team can answer "who created the entry that grants this identity" or
// "who was refused". Records go to the server's own log, marked
// type=audit, with SPIRE's field names: request_id, method, status
// (success|error), status_code, status_message, and the caller
// (caller_uid, caller_gid, caller_pid, caller_path on the admin socket;
// caller_addr and caller_id on the agent API).
//
// A gRPC interceptor (Logger.UnaryInterceptor, Logger.StreamInterceptor)
// opens a Record per call and emits it when the call returns; handlers
// add the fields only they know (the entry a batch item created, the
// agent an attestation named) through FromContext. Without the
// interceptor FromContext returns nil, and a nil Record takes every call
// and does nothing, so a server with the audit log off pays one context
// lookup per call.
//
// The caller of this package decides what a request's fields are; it
// must never pass secrets (join tokens, keys, CSRs, JWTs).
package audit
