// Package workloadapitest provides a throwaway CA issuing real X.509 and JWT
// SVIDs, and an in-memory cache.Provider serving them, for tests of the
// Workload API and its clients. It is not for production use.
package workloadapitest
