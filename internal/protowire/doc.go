// Package protowire describes protobuf messages and services by what
// decides wire compatibility (full names, field numbers, kinds, streaming),
// so tests can hold Signet's copies of another project's protobufs
// (SPIRE's) to that project's definitions.
package protowire
