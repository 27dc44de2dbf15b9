//go:build e2e

// Package node runs netvol's end-to-end environment: node VMs whose kernel
// has what this machine's lacks (the NBD block driver, the NFS client), and
// the servers on the host they talk to. Every file carries the e2e build tag;
// `make e2e` runs the suites.
//
// # Nodes
//
// A node is qemu-system-x86_64 (TCG: KVM hangs on these machines) booting
// Debian's kernel from /boot with an initramfs the harness builds once per
// run (busybox, the 9p modules, the agent). The node's root is the host's /
// over 9p, read-only, so it runs the host's programs, including the netvol
// binary `make build` made, at their host paths; the directories in
// guestTmpfsDirs are tmpfs. Each node has:
//
//   - a raw ext4 state disk at GuestStateDir, kept across Reboot and Crash;
//   - a read-write share: Node.HostShare on the host is GuestShare inside;
//   - optionally a second NIC on a PrivateLink to one other node (qemu UDP
//     socket netdevs on the host's loopback: no privileges, and either end
//     may crash or freeze and come back);
//   - user-mode networking: HostAddr:PORT inside reaches 127.0.0.1:PORT on
//     the host, so host servers bind loopback; SetLink cuts and restores it;
//     Options.HostForward forwards the host's 127.0.0.1:P to the node's port
//     P, so a server in the node is reached from the host, and from other
//     nodes at HostAddr:P, on the port it listens on;
//   - a serial console logged to a file; failures show its tail;
//   - an agent on a virtio-serial port (not the network, so it works while
//     the link is cut) that runs shell commands, several at once.
//
// API, in the order a test uses it:
//
//	Main(m)                  TestMain hook: per-run artifact cache, rpcbind
//	Start(t, Options)        boot one node (stopped at test end)
//	StartAll(t, opts...)     boot several in parallel
//	n.Run(ctx, script)       sh -c script in the node → Result{Stdout, Stderr, ExitCode}
//	n.RunInput(ctx, s, in)   the same with stdin
//	n.MustRun(t, script)     stdout, or fail the test showing output and console
//	n.MustFail(t, script)    Result, or fail the test if the script succeeds
//	n.Reboot(ctx)            clean shutdown and boot, same disk
//	n.Shutdown(ctx)          sync and power off; n.Boot(ctx) starts it again
//	n.Crash()                kill qemu (power cut); n.Boot(ctx) starts it again
//	n.SetLink(ctx, up)       cut or restore the node's network (QMP set_link)
//	n.Freeze(ctx), n.Thaw    stop and resume the node's CPUs (QMP stop/cont):
//	                         dead to everyone, then back with its memory
//	NewPrivateLink(t)        an Ethernet between two nodes (Options.Private =
//	                         link.End(0|1), n.PrivateAddr() 192.168.77.1|2)
//	StartSwarm(t, mgr, w...) a Docker Swarm over the private link
//	n.ConsoleTail(lines)     the end of the serial console, all boots
//	n.StartDocker(t)         dockerd in the node, BusyboxImage imported
//	StartGuestServer(t, n, bin, nbdPort, apiPort)
//	                         `netvol server` in n, data on its state disk (a
//	                         storage node that can lose power, the daemon
//	                         dies with n); Start again after Crash and Boot,
//	                         Stop, PluginArgs
//
// # Host fixtures
//
// Each starts processes with t.Cleanup to stop them, and with
// PR_SET_PDEATHSIG so they die with the test binary even if cleanups never
// run. Ports are picked free, so suites and an existing service do not clash.
// They leave the host's own services alone: a running rpcbind is used, never
// restarted or stopped, and StartHostDocker's dockerd runs in a network
// namespace of its own, so the host's docker0 and the rest of its network
// stay as they were (e2e's TestHostFixturesLeaveTheHostAlone checks both).
// What runs in that namespace and needs a host server (a managed plugin,
// whose host networking is dockerd's) gets it through
// HostDocker.ForwardLoopback(t, ports...).
//
//	StartNBDServer(t, format, MiB)  qemu-nbd on an image; AttachCommand, ReadExt4File
//	StartNFSServer(t)               nfs-ganesha (+ rpcbind unless one runs; it
//	                                runs until Main ends), exports Squashed and NoSquash;
//	                                MountCommand, MountOptions (v4.1, v4, v3)
//	StartDaemon(t, log, argv...)    any host daemon; WaitTCP, Stop, Kill, LogTail
//	StartHostDocker(t)              dockerd on the host, in a network namespace of its own
//	NetvolBinary(t)                 <repo>/bin/netvol, valid on the host and in nodes
//	FreePort(t)                     a free TCP port
//	StartNetvolServer(t)            `netvol server` on loopback; Kill, Restart,
//	                                PluginArgs (server.go)
//
// # Environment
//
// RequireRoot and RequireTools skip a test on a developer's machine that
// lacks something, and fail it in CI (CI=true), where .ci/run (make deps) installs
// everything. Set NETVOL_E2E_CACHE to a directory to keep the initramfs and
// agent between runs.
package node
