// Package nfs is the backend for volumes of type nfs: one directory per
// volume inside an NFS export, made and removed on the server through an
// NFSv3 client and mounted on this host with mount(2).
//
// # Directory management
//
// Create, Remove, Get and List speak NFSv3 and MOUNT v3 over TCP (RFC 1813,
// RFC 5531) with AUTH_SYS credentials (Config.UID and Config.GID, with no
// supplementary groups). The protocol types and the XDR codec come from
// github.com/willscott/go-nfs-client; the RPC transport is ours (rpc.go),
// because the library's rpc.Client cannot honour a context: it takes none,
// retries a call up to 100 times with a 5 s package-level timeout, and
// closing it while a call is in flight can close a reply channel twice
// (a panic in its receive goroutine). Its Target also starts a cache
// goroutine that never ends, one per mounted export, and its AUTH_SYS
// helper (rpc.NewAuthUnix) silently adds group 0. Here every operation
// opens its own connections, each call carries ctx's deadline on the
// socket, and cancelling ctx interrupts the call at once.
//
// Every name is re-checked against the volume name rule before any call;
// the backend works only by file handle below the export's root handle, one
// plain name at a time, so it never reaches outside the export and never
// removes the export's root. Symbolic links and other non-directories
// directly in the export are not volumes: Get and Remove report them as not
// found and leave them alone, and a recursive delete removes links, never
// what they point to.
//
// When the server squashes root (root_squash, ganesha's default) and
// Config.UID is 0, the server creates directories as the anonymous user and
// refuses to give them another owner: Create with Options.UID or GID then
// removes the directory it made and fails with an error that says so. Use
// no_root_squash on the export, or leave the owner unset.
//
// # Mounts
//
// Mount computes a mount.Mount in pure code (mountSpec) and hands it to the
// Mounter. There is no mount.nfs helper, so the kernel gets what the helper
// would otherwise work out: addr= (the server resolved to an IP; the kernel
// refuses a mount without it) and, for NFSv3, the NFS and MOUNT ports from
// the server's portmapper with nolock, because no statd runs here.
// clientaddr= is not set: without it the kernel uses the local address of
// its connection to the server (nfs4_init_client calls rpc_localaddr), and
// NFSv4.1 runs callbacks over that connection anyway.
package nfs
