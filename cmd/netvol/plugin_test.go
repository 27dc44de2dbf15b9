package main

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netvol/netvol/internal/opcmd"
	"github.com/sirupsen/logrus"
)

func TestPluginEnvTwins(t *testing.T) {
	env := map[string]string{
		"NETVOL_NFS": "nas:/srv/vols", "NETVOL_NFS_VERSION": "3", "NETVOL_NFS_PORT": "2050", "NETVOL_NFS_MOUNT_PORT": "20049",
		"NETVOL_SERVER": "https://store:10810", "NETVOL_NBD": "store:10809", "NETVOL_TOKEN_FILE": "/etc/netvol/token",
		"NETVOL_TOKEN": "t0k", "NETVOL_NODE": "web1", "NETVOL_STATE_DIR": "/srv/state", "NETVOL_MOUNT_ROOT": "/mnt/nv",
		"NETVOL_DEFAULT_TYPE": "nfs", "NETVOL_DEFAULT_SIZE": "5G", "NETVOL_LOG_LEVEL": "debug", "NETVOL_SOCKET": "/run/x.sock",
	}
	flags := map[string]string{
		"nfs": "nas:/srv/vols", "nfs-version": "3", "nfs-port": "2050", "nfs-mount-port": "20049", "server": "https://store:10810",
		"nbd": "store:10809", "token-file": "/etc/netvol/token", "token": "t0k", "node": "web1", "state-dir": "/srv/state",
		"mount-root": "/mnt/nv", "default-type": "nfs", "default-size": "5G", "log-level": "debug", "socket": "/run/x.sock",
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	fl := newPluginCommand().Flags()
	for name, want := range flags {
		if got := fl.Lookup(name).Value.String(); got != want {
			t.Errorf("--%s = %q from the environment, want %q", name, got, want)
		}
	}
}

func TestPluginFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	base := pluginFlags{stateDir: dir, node: "n", logLevel: "info", defaultSize: "1G", nfsVersion: "4.1",
		socket: filepath.Join(dir, "p.sock")}
	for _, c := range []struct {
		change func(*pluginFlags)
		want   string
	}{
		{func(f *pluginFlags) {}, "nothing to serve"},
		{func(f *pluginFlags) { f.server = "127.0.0.1:1" }, "token"},
		{func(f *pluginFlags) { f.server, f.tokenFile = "127.0.0.1:1", "/nonexistent" }, "--token-file"},
		{func(f *pluginFlags) { f.nfs, f.defaultType = "h:/e", "iscsi" }, "--default-type"},
		{func(f *pluginFlags) { f.nfs, f.defaultSize = "h:/e", "ten" }, "--default-size"},
		{func(f *pluginFlags) { f.nfs, f.stateDir = "h:/e", "rel/dir" }, "--state-dir"},
		{func(f *pluginFlags) { f.nfs, f.logLevel = "h:/e", "loud" }, "--log-level"},
		{func(f *pluginFlags) { f.nfs = "no-export" }, "--nfs"},
		{func(f *pluginFlags) { f.nfs, f.nfsVersion = "h:/e", "2" }, "ersion"},
		{func(f *pluginFlags) { f.server, f.token = "ftp://x", "t" }, "--server"},
	} {
		f := base
		c.change(&f)
		err := runPlugin(context.Background(), f, func() { t.Errorf("%+v: the plugin started", f) })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error containing %q", f, err, c.want)
		}
	}
}

// --nfs is parsed once, the same for the plugin and the operator commands,
// IPv6 included.
func TestNFSFlagOneParser(t *testing.T) {
	log := logrus.New()
	log.SetOutput(io.Discard)
	for _, spec := range []string{"nas:/srv/vols", "[fd00::5]:/srv/vols"} {
		if _, _, err := newKinds(context.Background(), pluginFlags{nfs: spec, nfsVersion: "4.1"}, log); err != nil {
			t.Errorf("plugin refused --nfs %s: %v", spec, err)
		}
		if _, _, err := opcmd.SplitNFS(spec); err != nil {
			t.Errorf("netvol volume refused --nfs %s: %v", spec, err)
		}
	}
	for _, spec := range []string{"nas", "fd00::5:/srv", "nas:srv"} {
		_, _, err1 := newKinds(context.Background(), pluginFlags{nfs: spec, nfsVersion: "4.1"}, log)
		_, _, err2 := opcmd.SplitNFS(spec)
		if err1 == nil || err2 == nil || err1.Error() != err2.Error() {
			t.Errorf("--nfs %s: plugin %v, netvol volume %v; want the same refusal", spec, err1, err2)
		}
	}
}
