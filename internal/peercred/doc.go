// Package peercred provides gRPC transport credentials for Unix sockets that
// record the connecting process's kernel credentials (SO_PEERCRED: PID, UID,
// GID) at accept time, with the process's start time so that a later holder
// of the same PID can be told apart (Info.SameProcess). Handlers read them
// with FromContext. The credentials
// do no encryption: a Unix socket is local, and the kernel, not the caller,
// vouches for who is on the other end.
package peercred
