// Package federation is SPIFFE federation for the Signet server (SPIFFE
// Federation spec; go-spiffe's federation package speaks the protocol):
//
//   - a bundle endpoint serving the own trust domain's SPIFFE bundle
//     document over HTTPS, authenticated with the server's X509-SVID
//     (https_spiffe) or a Web PKI certificate from files (https_web), built
//     per request from the catalog so that CA and JWT key rotations show at
//     once;
//   - one refresher per configured relationship, fetching the foreign
//     trust domain's bundle at its refresh hint (bounded), authenticating
//     an https_spiffe endpoint with the bundle the store holds for it, and
//     replacing the stored bundle (store.SetBundle) with what it fetched.
//
// A stored foreign bundle reaches agents like any store change: the catalog
// reloads, and every Sync stream whose entries federate with that trust
// domain is pushed the new bundle.
package federation
