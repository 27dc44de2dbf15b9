package blockvol

import (
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/server/api"
	"github.com/netvol/netvol/volume/backend"
)

// volume is v as docker volume inspect shows it.
func (b *Backend) volume(m *member, v api.Volume) backend.Volume {
	st := map[string]string{
		"type":            backend.TypeNBD,
		"server":          m.name,
		"size":            strconv.FormatInt(v.Size, 10),
		"size_human":      units.HumanSize(v.Size),
		"allocated":       strconv.FormatInt(v.Allocated, 10),
		"allocated_human": units.HumanSize(v.Allocated),
		"created":         v.CreatedAt.UTC().Format(time.RFC3339),
	}
	if v.From != "" {
		st["from"] = v.From
	}
	if v.FromSnapshot != "" {
		st["from_snapshot"] = v.FromSnapshot
	}
	if s := SnapshotList(v.Snapshots); s != "" {
		st["snapshots"] = s
	}
	if a := AttachedList(v.Attachments); a != "" {
		st["attached"] = a
	}
	if l := b.lease(v.Name); l != nil {
		st["lease"] = l.state()
		if why := l.lostWhy(); why != "" {
			st["lease_lost"] = why
		}
	}
	if from := v.Labels[LabelIncoming]; from != "" {
		st["moving_from"] = from
	}
	return backend.Volume{Name: v.Name, CreatedAt: v.CreatedAt, Status: st, Stored: storedOptions(v.Labels), Server: m.name}
}

// SnapshotList writes a volume's snapshots for docker volume inspect's
// Status, oldest first: "nightly (2026-11-23T02:00:00Z), weekly (...)".
func SnapshotList(snaps []api.Snapshot) string {
	var parts []string
	for _, s := range snaps {
		parts = append(parts, s.Name+" ("+s.CreatedAt.UTC().Format(time.RFC3339)+")")
	}
	return strings.Join(parts, ", ")
}

// LabelPrefix marks the labels that hold a volume's stored options
// (backend.Options.Stored): netvol.uid, netvol.mount-opts and so on. Other
// labels are the operator's.
const LabelPrefix = "netvol."

// storedLabels are the labels that keep o's stored options.
func storedLabels(o backend.Options) map[string]string {
	stored := o.Stored()
	if stored == nil {
		return nil
	}
	labels := make(map[string]string, len(stored))
	for k, v := range stored {
		labels[LabelPrefix+k] = v
	}
	return labels
}

// storedOptions reads the stored options back from a volume's labels, as
// they are: the driver checks them before any use. nil when there are
// none.
func storedOptions(labels map[string]string) map[string]string {
	var out map[string]string
	for k, v := range labels {
		if k == LabelIncoming {
			continue // the pool's, not an option
		}
		if key, ok := strings.CutPrefix(k, LabelPrefix); ok {
			if out == nil {
				out = map[string]string{}
			}
			out[key] = v
		}
	}
	return out
}

// AttachedList lists attachments as "node(mode)", marking the leases the
// server says lapsed (by its own clock, never compared with ours).
func AttachedList(atts []api.Attachment) string {
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
