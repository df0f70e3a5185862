// Package audittest reads the audit records out of a captured JSON log,
// for the tests of the services that write them.
package audittest
