package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/netvol/netvol/nbd"
)

func TestNBDAndCallsExposition(t *testing.T) {
	var hist [nbd.LatencyBucketCount + 1]uint64
	hist[0], hist[3], hist[nbd.LatencyBucketCount] = 5, 2, 1
	stats := nbd.Stats{Connections: 3, InFlight: 2, Commands: map[nbd.Cmd]nbd.CmdStats{
		nbd.CmdWrite: {Requests: 8, Errors: 1, Bytes: 4096 * 7, Latency: 2 * time.Second, Histogram: hist},
	}}
	calls := NewCalls()
	calls.Observe("mount", 30*time.Millisecond, nil)
	calls.Observe("mount", 2*time.Second, errors.New("x"))
	reg := NewRegistry(NewNBDCollector(func() nbd.Stats { return stats }), calls.Collector())
	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	text := string(body)
	for _, want := range []string{
		`netvol_nbd_connections 3`,
		`netvol_nbd_requests_in_flight 2`,
		`netvol_nbd_requests_total{cmd="write"} 8`,
		`netvol_nbd_errors_total{cmd="write"} 1`,
		`netvol_nbd_bytes_total{cmd="write"} 28672`,
		`netvol_nbd_request_duration_seconds_bucket{cmd="write",le="5e-05"} 5`,
		`netvol_nbd_request_duration_seconds_bucket{cmd="write",le="0.0005"} 7`,
		`netvol_nbd_request_duration_seconds_bucket{cmd="write",le="+Inf"} 8`,
		`netvol_nbd_request_duration_seconds_sum{cmd="write"} 2`,
		`netvol_plugin_call_duration_seconds_count{method="mount",result="ok"} 1`,
		`netvol_plugin_call_duration_seconds_count{method="mount",result="error"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %q", want)
		}
	}
}
