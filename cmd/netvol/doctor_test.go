package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/netvol/netvol/internal/doctor"
)

// The command itself: JSON, and exit status zero without FAILs.
func TestDoctorCommandJSON(t *testing.T) {
	dir := t.TempDir()
	out, err := netvol(t, "doctor", "--json", "--docker-host", "unix://"+filepath.Join(dir, "d.sock"),
		"--socket", filepath.Join(dir, "p.sock"), "--timeout", "2s")
	var rep struct {
		Checks         []doctor.Result
		OK, Warn, Fail int
	}
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil || len(rep.Checks) < 7 || rep.OK+rep.Warn+rep.Fail != len(rep.Checks) {
		t.Fatalf("doctor --json: %v\n%s", jerr, out)
	}
	if (rep.Fail > 0) != (err != nil) {
		t.Fatalf("%d FAILs, error %v", rep.Fail, err)
	}
	for _, r := range rep.Checks {
		if r.Check == "configuration" && r.Status != doctor.StatusWarn {
			t.Errorf("nothing configured: %+v", r)
		}
	}
}
