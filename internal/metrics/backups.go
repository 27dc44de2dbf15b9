package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// VolumeBackups is what the storage daemon reports of one volume's
// backups since it started.
type VolumeBackups struct {
	LastSuccess          time.Time // zero: none succeeded yet
	LastData, LastStored int64
	Successes, Failures  uint64
}

type backupCollector struct {
	stats                                   func() map[string]VolumeBackups
	last, data, stored, successes, failures *prometheus.Desc
}

// NewBackupCollector exports, per volume, the time and size of the last
// backup that succeeded and the counts of backups that succeeded and
// failed.
func NewBackupCollector(stats func() map[string]VolumeBackups) prometheus.Collector {
	vol := []string{"volume"}
	return &backupCollector{stats: stats,
		last:      prometheus.NewDesc("netvol_backup_last_success_timestamp_seconds", "When the last backup of the volume that succeeded was taken (Unix time).", vol, nil),
		data:      prometheus.NewDesc("netvol_backup_last_data_bytes", "Data bytes (clusters that are not zeros) of the volume's last backup.", vol, nil),
		stored:    prometheus.NewDesc("netvol_backup_last_stored_bytes", "Bytes the volume's last backup added to the target.", vol, nil),
		successes: prometheus.NewDesc("netvol_backups_total", "Backups of the volume that succeeded.", vol, nil),
		failures:  prometheus.NewDesc("netvol_backup_failures_total", "Backups of the volume that failed.", vol, nil),
	}
}

func (c *backupCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.last, c.data, c.stored, c.successes, c.failures} {
		ch <- d
	}
}

func (c *backupCollector) Collect(ch chan<- prometheus.Metric) {
	for vol, s := range c.stats() {
		if !s.LastSuccess.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.last, prometheus.GaugeValue, float64(s.LastSuccess.UnixNano())/1e9, vol)
			ch <- prometheus.MustNewConstMetric(c.data, prometheus.GaugeValue, float64(s.LastData), vol)
			ch <- prometheus.MustNewConstMetric(c.stored, prometheus.GaugeValue, float64(s.LastStored), vol)
		}
		ch <- prometheus.MustNewConstMetric(c.successes, prometheus.CounterValue, float64(s.Successes), vol)
		ch <- prometheus.MustNewConstMetric(c.failures, prometheus.CounterValue, float64(s.Failures), vol)
	}
}
