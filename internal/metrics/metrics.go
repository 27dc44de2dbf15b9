// Package metrics exposes netvol's counters to Prometheus. The packages
// that count (nbd, volume, server) know nothing of Prometheus: they keep
// plain counters or call an observer, and the collectors here read them at
// scrape time.
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/netvol/netvol/nbd"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors and the given ones.
func NewRegistry(cs ...prometheus.Collector) *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r.MustRegister(cs...)
	return r
}

// Handler serves a registry in the Prometheus text format.
func Handler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{})
}

// nbdCollector reads an NBD server's counters at scrape time.
type nbdCollector struct {
	stats                                        func() nbd.Stats
	requests, errors, bytes, latency, conns, inq *prometheus.Desc
}

// NewNBDCollector exports the counters of an NBD server: requests, errors
// and bytes by command, the latency histogram, connections and requests in
// flight.
func NewNBDCollector(stats func() nbd.Stats) prometheus.Collector {
	cmd := []string{"cmd"}
	return &nbdCollector{stats: stats,
		requests: prometheus.NewDesc("netvol_nbd_requests_total", "NBD requests answered, by command.", cmd, nil),
		errors:   prometheus.NewDesc("netvol_nbd_errors_total", "NBD requests answered with an error, by command.", cmd, nil),
		bytes:    prometheus.NewDesc("netvol_nbd_bytes_total", "Bytes of successful NBD requests, by command.", cmd, nil),
		latency:  prometheus.NewDesc("netvol_nbd_request_duration_seconds", "Time from dispatch to reply of NBD requests.", cmd, nil),
		conns:    prometheus.NewDesc("netvol_nbd_connections", "NBD connections in the transmission phase.", nil, nil),
		inq:      prometheus.NewDesc("netvol_nbd_requests_in_flight", "NBD requests being served.", nil, nil),
	}
}

func (c *nbdCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.requests, c.errors, c.bytes, c.latency, c.conns, c.inq} {
		ch <- d
	}
}

func (c *nbdCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(s.Connections))
	ch <- prometheus.MustNewConstMetric(c.inq, prometheus.GaugeValue, float64(s.InFlight))
	bounds := nbd.LatencyBuckets()
	for cmd, cs := range s.Commands {
		name := strings.ToLower(strings.TrimPrefix(cmd.String(), "NBD_CMD_"))
		ch <- prometheus.MustNewConstMetric(c.requests, prometheus.CounterValue, float64(cs.Requests), name)
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(cs.Errors), name)
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(cs.Bytes), name)
		buckets := map[float64]uint64{}
		var cum uint64
		for i, b := range bounds {
			cum += cs.Histogram[i]
			buckets[b.Seconds()] = cum
		}
		ch <- prometheus.MustNewConstHistogram(c.latency, cs.Requests, cs.Latency.Seconds(), buckets, name)
	}
}

// Calls measures the plugin's VolumeDriver calls by method and outcome.
type Calls struct {
	duration *prometheus.HistogramVec
}

// NewCalls returns the plugin-call metrics; register Collector().
func NewCalls() *Calls {
	return &Calls{duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "netvol_plugin_call_duration_seconds",
		Help:    "Duration of VolumeDriver calls, by method and result (ok or error).",
		Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 2.5, 5, 10, 25},
	}, []string{"method", "result"})}
}

// Collector is what to register.
func (c *Calls) Collector() prometheus.Collector { return c.duration }

// Observe records one call; it fits volume.Config.Observe.
func (c *Calls) Observe(method string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.duration.WithLabelValues(method, result).Observe(d.Seconds())
}

// DaemonStats is what the storage daemon reports at scrape time.
type DaemonStats struct {
	Volumes, Attachments          int
	Attaches, Renewals, Takeovers uint64
}

// daemonCollector reads the storage daemon's registry and counters.
type daemonCollector struct {
	stats                                     func() (DaemonStats, error)
	vols, atts, attaches, renewals, takeovers *prometheus.Desc
}

// NewDaemonCollector exports the storage daemon's volumes, attachments and
// lease activity.
func NewDaemonCollector(stats func() (DaemonStats, error)) prometheus.Collector {
	return &daemonCollector{stats: stats,
		vols:      prometheus.NewDesc("netvol_volumes", "Volumes in the registry.", nil, nil),
		atts:      prometheus.NewDesc("netvol_attachments", "Attachments recorded, live or lapsed.", nil, nil),
		attaches:  prometheus.NewDesc("netvol_attaches_total", "Attachments issued.", nil, nil),
		renewals:  prometheus.NewDesc("netvol_lease_renewals_total", "Leases renewed.", nil, nil),
		takeovers: prometheus.NewDesc("netvol_lease_takeovers_total", "Attachments of other nodes taken over after their lease lapsed.", nil, nil),
	}
}

func (c *daemonCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.vols, c.atts, c.attaches, c.renewals, c.takeovers} {
		ch <- d
	}
}

func (c *daemonCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.vols, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.vols, prometheus.GaugeValue, float64(s.Volumes))
	ch <- prometheus.MustNewConstMetric(c.atts, prometheus.GaugeValue, float64(s.Attachments))
	ch <- prometheus.MustNewConstMetric(c.attaches, prometheus.CounterValue, float64(s.Attaches))
	ch <- prometheus.MustNewConstMetric(c.renewals, prometheus.CounterValue, float64(s.Renewals))
	ch <- prometheus.MustNewConstMetric(c.takeovers, prometheus.CounterValue, float64(s.Takeovers))
}
