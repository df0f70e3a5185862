// Package selector parses, validates and matches selectors: the `type:value`
// properties that attestors observe about a workload or a node (for example
// `unix:uid:1000` or `k8s:ns:payments`). A workload matches a registration
// entry when the entry's selectors are a subset of the workload's.
package selector
