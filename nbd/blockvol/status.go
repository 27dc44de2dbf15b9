package blockvol

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/nbd/apiclient"
	"github.com/netvol/netvol/volume/backend"
)

// volume is v as docker volume inspect shows it.
func (b *Backend) volume(v apiclient.Volume) backend.Volume {
	st := map[string]string{
		"type":            backend.TypeNBD,
		"server":          b.cfg.API.Server(),
		"size":            strconv.FormatInt(v.Size, 10),
		"size_human":      humanSize(v.Size),
		"allocated":       strconv.FormatInt(v.Allocated, 10),
		"allocated_human": humanSize(v.Allocated),
		"created":         v.CreatedAt.UTC().Format(time.RFC3339),
	}
	if v.From != "" {
		st["from"] = v.From
	}
	if a := attached(v.Attachments); a != "" {
		st["attached"] = a
	}
	if l := b.lease(v.Name); l != nil {
		st["lease"] = l.state()
		if why := l.lostWhy(); why != "" {
			st["lease_lost"] = why
		}
	}
	return backend.Volume{Name: v.Name, CreatedAt: v.CreatedAt, Status: st}
}

// attached lists attachments as "node(mode)", marking the leases the
// server says lapsed.
func attached(atts []apiclient.Attachment) string {
	parts := make([]string, 0, len(atts))
	for _, a := range atts {
		s := a.Node + "(" + a.Mode
		if a.ExpiresInMS <= 0 {
			s += ", lapsed"
		}
		parts = append(parts, s+")")
	}
	return strings.Join(parts, ", ")
}

// humanSize writes n bytes with a binary unit: 1GiB, 1.5GiB, 512B.
func humanSize(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f, i = f/1024, i+1
	}
	if f == math.Trunc(f) {
		return fmt.Sprintf("%.0f%s", f, units[i])
	}
	return fmt.Sprintf("%.1f%s", f, units[i])
}
