package server

import (
	"maps"
	"sync"
	"time"

	"github.com/netvol/netvol/server/backup"
)

// BackupStat is what the metrics show of one volume's backups since the
// daemon started.
type BackupStat struct {
	LastSuccess time.Time // when the last backup that succeeded was taken
	LastData    int64     // its data bytes (the volume's clusters that are not zeros)
	LastStored  int64     // what it added to the target
	Successes   uint64
	Failures    uint64
}

// backupStats keeps which volumes are being backed up and the counts.
type backupStats struct {
	mu      sync.Mutex
	running map[string]bool
	vols    map[string]BackupStat
}

func newBackupStats() *backupStats {
	return &backupStats{running: map[string]bool{}, vols: map[string]BackupStat{}}
}

// start marks volume as being backed up; false when it already is.
func (b *backupStats) start(volume string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running[volume] {
		return false
	}
	b.running[volume] = true
	return true
}

func (b *backupStats) end(volume string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.running, volume)
}

func (b *backupStats) record(volume string, m *backup.Manifest, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st := b.vols[volume]
	if err != nil || m == nil {
		st.Failures++
	} else {
		st.Successes++
		st.LastSuccess, st.LastData, st.LastStored = m.CreatedAt, m.DataBytes, m.StoredBytes
	}
	b.vols[volume] = st
}

// BackupStats returns each volume's backup counts since the start.
func (s *Service) BackupStats() map[string]BackupStat {
	s.bstats.mu.Lock()
	defer s.bstats.mu.Unlock()
	return maps.Clone(s.bstats.vols)
}
