package volume

import (
	"strings"
	"testing"

	"github.com/netvol/netvol/volume/backend"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "data", "my-vol_1.2", "A" + strings.Repeat("b", 127)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "-a", "_a", "a/b", "a b", "a\x00", "A" + strings.Repeat("b", 128), "ü"} {
		if err := CheckName(bad); err == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
}

func TestParseOptionsNFS(t *testing.T) {
	p, err := ParseOptions(map[string]string{"type": "nfs", "uid": "0", "gid": "100", "mode": "770",
		"on-remove": "archive", "server": "nas.example.com", "export": "/srv/nfs/vols", "mount-opts": "noatime,vers=3"}, "nbd", 1)
	if err != nil {
		t.Fatal(err)
	}
	o := p.Options
	if p.Type != "nfs" || o.UID != 0 || o.GID != 100 || o.Mode != 0o770 || o.OnRemove != "archive" || o.Server != "nas.example.com" ||
		o.Export != "/srv/nfs/vols" || strings.Join(o.MountOpts, "|") != "noatime|vers=3" || o.Size != 0 || o.FS != "" {
		t.Fatalf("%+v", p)
	}
}

// FuzzParseOptions: no input panics, and whatever is accepted is within
// the documented bounds.
func FuzzParseOptions(f *testing.F) {
	f.Add("type", "nbd", "size", "1G")
	f.Add("mode", "0755", "uid", "1000")
	f.Add("export", "/srv/../x", "server", "a.b")
	f.Add("from", "base", "mount-opts", "noatime")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		p, err := ParseOptions(map[string]string{k1: v1, k2: v2}, "nbd", 1<<30)
		if err != nil {
			return
		}
		o := p.Options
		switch {
		case p.Type != backend.TypeNBD && p.Type != backend.TypeNFS:
			t.Fatalf("type %q", p.Type)
		case o.Mode > 0o777, o.UID < -1, o.GID < -1:
			t.Fatalf("out of bounds: %+v", o)
		case o.From != "" && CheckName(o.From) != nil:
			t.Fatalf("from %q", o.From)
		case strings.Contains(o.Export, "/.."), o.Export != "" && !strings.HasPrefix(o.Export, "/"):
			t.Fatalf("export %q", o.Export)
		case strings.ContainsAny(o.Server, "/ ;$`"):
			t.Fatalf("server %q", o.Server)
		case p.Type == backend.TypeNBD && o.Size <= 0 && o.FromBackup == "":
			t.Fatalf("size %d", o.Size)
		}
	})
}

func TestParseOptionsFromSnapshot(t *testing.T) {
	p, err := ParseOptions(map[string]string{"from": "db", "from-snapshot": "nightly"}, "nbd", 1)
	if err != nil || p.Options.From != "db" || p.Options.FromSnapshot != "nightly" {
		t.Fatalf("%+v %v", p, err)
	}
	for raw, want := range map[string]map[string]string{
		"needs from=VOLUME":                    {"from-snapshot": "nightly"},
		"snapshot name":                        {"from": "db", "from-snapshot": "../x"},
		"only to nbd":                          {"type": "nfs", "from-snapshot": "x"},
		"from, from-backup, from-snapshot, fs": {"from_snapshot": "x"},
	} {
		if _, err := ParseOptions(want, "nbd", 1); err == nil || !strings.Contains(err.Error(), raw) {
			t.Errorf("ParseOptions(%v) = %v, want an error saying %q", want, err, raw)
		}
	}
}

// -o from-backup=ID restores a backup (of its own size unless size is
// given); -o backup-every and -o backup-keep schedule backups and travel
// with the volume (stored options).
func TestParseOptionsBackups(t *testing.T) {
	id := "db.20260101T120000Z.0123abcd"
	p, err := ParseOptions(map[string]string{"from-backup": id, "backup-every": "1h", "backup-keep": "24"}, "nbd", 1<<30)
	if err != nil || p.Options.FromBackup != id || p.Options.Size != 0 {
		t.Fatalf("%+v %v", p, err)
	}
	if st := p.Options.Stored(); st["backup-every"] != "1h" || st["backup-keep"] != "24" {
		t.Fatalf("stored %v", st)
	}
	for raw, want := range map[string]map[string]string{
		"want a backup ID":  {"from-backup": "../x"},
		"give one":          {"from-backup": id, "from": "db"},
		"a minute or more":  {"backup-every": "1s"},
		"number of backups": {"backup-keep": "0"},
		"only to nbd":       {"type": "nfs", "backup-every": "1h"},
		"want a duration":   {"backup-every": "hourly"},
	} {
		if _, err := ParseOptions(want, "nbd", 1); err == nil || !strings.Contains(err.Error(), raw) {
			t.Errorf("ParseOptions(%v) = %v, want an error saying %q", want, err, raw)
		}
	}
}
