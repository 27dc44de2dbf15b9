package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestBackupExposition(t *testing.T) {
	stats := map[string]VolumeBackups{
		"db":  {LastSuccess: time.Unix(1700000000, 0), LastData: 4096, LastStored: 512, Successes: 3, Failures: 1},
		"new": {Failures: 2},
	}
	reg := NewRegistry(NewBackupCollector(func() map[string]VolumeBackups { return stats }))
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`netvol_backup_last_success_timestamp_seconds{volume="db"} 1.7e+09`,
		`netvol_backup_last_data_bytes{volume="db"} 4096`,
		`netvol_backup_last_stored_bytes{volume="db"} 512`,
		`netvol_backups_total{volume="db"} 3`,
		`netvol_backup_failures_total{volume="db"} 1`,
		`netvol_backup_failures_total{volume="new"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
	if strings.Contains(text, `netvol_backup_last_success_timestamp_seconds{volume="new"}`) {
		t.Error("a volume with no success has a last success time")
	}
}
