// Package volume is netvol's Docker volume driver: it answers the
// VolumeDriver protocol (through go-plugins-helpers), validates names and
// options, counts Docker's mount IDs per volume in the node store, and
// drives the backends of package volume/backend.
//
// The driver performs no mount itself: backends do, behind the contract in
// volume/backend, and what it needs of the host (is a path mounted, how full
// is it) comes through the Host interface. Its tests run without root.
//
// Every call is bounded by Config.Timeout (25 s by default, under the 30 s a
// managed plugin gets): when a backend does not return in time the call
// answers an error and the operation finishes in the background, still
// holding the volume's lock, so the next call on that volume waits for it.
package volume
