package main

import (
	"context"
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/netvol/netvol/blockvol"
	"github.com/netvol/netvol/internal/mount"
	"github.com/netvol/netvol/internal/opcmd"
	"github.com/netvol/netvol/nfs"
	"github.com/netvol/netvol/volume"
	"github.com/netvol/netvol/volume/backend"
)

// kindHooks are what the backends need around the plugin's life: close
// stops what they run in the background (lease renewal); afterReconcile
// runs once the driver has reconciled its mounts.
type kindHooks struct {
	closers        []func()
	afterReconcile []func(context.Context)
}

func (h *kindHooks) close() {
	for _, c := range h.closers {
		c()
	}
}

func (h *kindHooks) reconciled(ctx context.Context) {
	for _, f := range h.afterReconcile {
		f(ctx)
	}
}

// newKinds builds the backends the flags configure.
func newKinds(ctx context.Context, f pluginFlags, log logrus.FieldLogger) (map[string]volume.Kind, *kindHooks, error) {
	kinds := map[string]volume.Kind{}
	hooks := &kindHooks{}
	if f.nfs != "" {
		server, export, err := opcmd.SplitNFS(f.nfs)
		if err != nil {
			return nil, nil, err
		}
		b, err := nfs.New(nfs.Config{Server: server, Export: export, Version: f.nfsVersion,
			Port: f.nfsPort, MountPort: f.nfsMountPort, Mounter: mount.System{}})
		if err != nil {
			return nil, nil, fmt.Errorf("--nfs: %w", err)
		}
		kinds[backend.TypeNFS] = volume.Kind{Backend: b, CheckMountOpts: nfs.CheckMountOptions}
	}
	if f.server != "" {
		clients, err := f.conn().APIClients()
		if err != nil {
			return nil, nil, err
		}
		servers := make([]blockvol.API, len(clients))
		for i, c := range clients {
			servers[i] = c
		}
		att, adopt, err := newAttacher(ctx, f, log)
		if err != nil {
			return nil, nil, err
		}
		// Reconcile may have undone a mount it found no record of: adopting
		// again stops that mount's helper, which the first pass kept.
		hooks.afterReconcile = append(hooks.afterReconcile, adopt)
		b, err := blockvol.New(blockvol.Config{Servers: servers, Node: f.node, NBDAddr: f.nbdAddr,
			Attacher: att, Mounter: mount.System{}, Formatter: blockvol.Mkfs{}, FSGrower: blockvol.Ext4Grower{},
			Log: log.WithField("component", "nbd")})
		if err != nil {
			return nil, nil, err
		}
		hooks.closers = append(hooks.closers, b.Close)
		kinds[backend.TypeNBD] = volume.Kind{Backend: b, CheckMountOpts: blockvol.CheckMountOptions, CheckMkfsOpts: blockvol.CheckMkfsOptions}
	}
	return kinds, hooks, nil
}

func mountHost() volume.Host { return mount.Host{} }
