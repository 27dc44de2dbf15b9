package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// migrationTests holds one test per migration, keyed "<kind>/<version>".
// TestEveryMigrationHasATest fails when a migration is added without one.
func migrationTests() map[string]func(*testing.T) {
	return map[string]func(*testing.T){
		"registry/1": testRegistryV1,
		"registry/2": testRegistryV2,
		"registry/3": testRegistryV3,
		"registry/4": testRegistryV4,
		"node/1":     testNodeV1,
	}
}

func TestEveryMigrationHasATest(t *testing.T) {
	tests := migrationTests()
	for _, s := range []schema{registrySchema(), nodeSchema()} {
		for i, m := range s.migrations {
			if m.version != i+1 {
				t.Errorf("%s migration %d (%s) has version %d, want %d", s.kind, i, m.name, m.version, i+1)
			}
			name := fmt.Sprintf("%s/%d", s.kind, m.version)
			test, ok := tests[name]
			if !ok {
				t.Errorf("migration %s (%s) has no test in migrationTests", name, m.name)
				continue
			}
			t.Run(name, test)
		}
	}
}

// rawDB opens a bare bbolt file brought to version `at` of schema s.
func rawDB(t *testing.T, s schema, at int) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "m.db"), 0o600, nil)
	must(t, err)
	t.Cleanup(func() { db.Close() })
	prefix := schema{kind: s.kind, migrations: s.migrations[:at]}
	if at > 0 {
		must(t, db.Update(func(tx *bolt.Tx) error { return runMigrations(tx, prefix) }))
	}
	return db
}

func hasBuckets(t *testing.T, db *bolt.DB, names ...[]byte) {
	t.Helper()
	must(t, db.View(func(tx *bolt.Tx) error {
		for _, n := range names {
			if tx.Bucket(keyV1).Bucket(n) == nil {
				return fmt.Errorf("no bucket v1/%s", n)
			}
		}
		return nil
	}))
}

func testRegistryV1(t *testing.T) {
	db := rawDB(t, registrySchema(), 0)
	must(t, db.Update(registryV1))
	hasBuckets(t, db, keyVolumes, keyExports, keyTokens)
}

// testRegistryV2: volumes recorded by schema 1 (a clone among them) get
// a snapshots bucket; the clone keeps reading its parent's own image.
func testRegistryV2(t *testing.T) {
	db := rawDB(t, registrySchema(), 1)
	must(t, db.Update(func(tx *bolt.Tx) error {
		vols := tx.Bucket(keyV1).Bucket(keyVolumes)
		for _, v := range []Volume{{Name: "v", File: "v.qcow2"}, {Name: "c", Parent: "v", File: "c.qcow2"}} {
			b, err := vols.CreateBucket([]byte(v.Name))
			if err != nil {
				return err
			}
			for _, sub := range [][]byte{keyAttachments, keyChildren} {
				if _, err := b.CreateBucket(sub); err != nil {
					return err
				}
			}
			if err := putJSON(b, keyRecord, newVolumeRecord(v)); err != nil {
				return err
			}
		}
		return vols.Bucket([]byte("v")).Bucket(keyChildren).Put([]byte("c"), nil)
	}))
	must(t, db.Update(registryV2))
	must(t, db.View(func(tx *bolt.Tx) error {
		vols := tx.Bucket(keyV1).Bucket(keyVolumes)
		for _, n := range []string{"v", "c"} {
			if vols.Bucket([]byte(n)).Bucket(keySnapshots) == nil {
				return fmt.Errorf("volume %s has no snapshots bucket", n)
			}
		}
		if got := immutable(vols.Bucket([]byte("v"))); fmt.Sprint(got) != "[c]" {
			return fmt.Errorf("the clone's parent is not immutable: %v", got)
		}
		_, err := readVolume(vols.Bucket([]byte("v")), "v")
		return err
	}))
}

func testRegistryV3(t *testing.T) {
	db := rawDB(t, registrySchema(), 2)
	must(t, db.Update(registryV3))
	hasBuckets(t, db, keyVolumes, keyExports, keyTokens, keyNames)
}

// testRegistryV4: volumes of schema 3 keep their snapshots and read as
// having no backup record.
func testRegistryV4(t *testing.T) {
	db := rawDB(t, registrySchema(), 3)
	must(t, db.Update(func(tx *bolt.Tx) error {
		vols := tx.Bucket(keyV1).Bucket(keyVolumes)
		b, err := vols.CreateBucket([]byte("v"))
		if err != nil {
			return err
		}
		for _, sub := range [][]byte{keyAttachments, keyChildren, keySnapshots} {
			if _, err := b.CreateBucket(sub); err != nil {
				return err
			}
		}
		if err := putJSON(b.Bucket(keySnapshots), []byte("s1"), snapshotRecord{V: 1, File: "v.qcow2"}); err != nil {
			return err
		}
		return putJSON(b, keyRecord, newVolumeRecord(Volume{Name: "v", File: "v.1.qcow2"}))
	}))
	must(t, db.Update(registryV4))
	must(t, db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(keyV1).Bucket(keyVolumes).Bucket([]byte("v"))
		v, err := readVolume(b, "v")
		if err != nil || len(v.Snapshots) != 1 {
			return fmt.Errorf("volume after migration: %+v, %v", v, err)
		}
		bs, err := readBackup(b, "v")
		if err != nil || bs != (BackupState{}) {
			return fmt.Errorf("backup record after migration: %+v, %v", bs, err)
		}
		return nil
	}))
}

func testNodeV1(t *testing.T) {
	db := rawDB(t, nodeSchema(), 0)
	must(t, db.Update(nodeV1))
	hasBuckets(t, db, keyVolumes, keyMounts)
}

func dbVersion(t *testing.T, db *bolt.DB, s schema) int {
	t.Helper()
	var v int
	must(t, db.View(func(tx *bolt.Tx) error {
		var err error
		v, err = readVersion(tx, s)
		return err
	}))
	return v
}

// fakeSchema records which of its three migrations ran.
func fakeSchema(ran *[]int, failAt int) schema {
	step := func(v int) func(*bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			if v == failAt {
				return errors.New("boom")
			}
			*ran = append(*ran, v)
			b, err := tx.CreateBucketIfNotExists(keyV1)
			if err != nil {
				return err
			}
			return b.Put(fmt.Appendf(nil, "m%d", v), nil)
		}
	}
	s := schema{kind: "fake"}
	for v := 1; v <= 3; v++ {
		s.migrations = append(s.migrations, migration{version: v, name: fmt.Sprint("step ", v), apply: step(v)})
	}
	return s
}

func TestMigrateRunsOnlyPending(t *testing.T) {
	var ran []int
	s := fakeSchema(&ran, 0)
	db := rawDB(t, s, 1)
	if got := dbVersion(t, db, s); got != 1 {
		t.Fatalf("version %d, want 1", got)
	}
	ran = nil
	must(t, migrate(db, s))
	if fmt.Sprint(ran) != "[2 3]" {
		t.Fatalf("ran %v, want [2 3]", ran)
	}
	if got := dbVersion(t, db, s); got != 3 {
		t.Fatalf("version %d, want 3", got)
	}
	ran = nil
	must(t, migrate(db, s))
	if len(ran) != 0 {
		t.Fatalf("current database migrated again: %v", ran)
	}
}

func TestFailedMigrationChangesNothing(t *testing.T) {
	var ran []int
	s := fakeSchema(&ran, 3)
	db := rawDB(t, s, 1)
	err := migrate(db, s)
	if err == nil {
		t.Fatal("failing migration reported success")
	}
	if got := dbVersion(t, db, fakeSchema(&ran, 0)); got != 1 {
		t.Fatalf("version %d after failed migration, want 1", got)
	}
	must(t, db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(keyV1).Get([]byte("m2")) != nil {
			return errors.New("migration 2 committed although 3 failed")
		}
		return nil
	}))
}

func TestFreshDatabaseIsAtLatest(t *testing.T) {
	r := openRegistry(t)
	n := openNode(t)
	for _, c := range []struct {
		db *bolt.DB
		s  schema
	}{{r.s.db, registrySchema()}, {n.s.db, nodeSchema()}} {
		if got, want := dbVersion(t, c.db, c.s), latest(c.s); got != want {
			t.Errorf("%s: version %d, want %d", c.s.kind, got, want)
		}
	}
}

// A registry of schema 1 with a volume goes through 2 (snapshots), 3
// (the pool's name claims) and 4 (backup records) in order when opened.
func TestRegistryMigratesInOrder(t *testing.T) {
	s := registrySchema()
	db := rawDB(t, s, 1)
	must(t, db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(keyV1).Bucket(keyVolumes).CreateBucket([]byte("v"))
		if err != nil {
			return err
		}
		for _, sub := range [][]byte{keyAttachments, keyChildren} {
			if _, err := b.CreateBucket(sub); err != nil {
				return err
			}
		}
		return putJSON(b, keyRecord, newVolumeRecord(Volume{Name: "v", File: "v.qcow2"}))
	}))
	must(t, migrate(db, s))
	if got := dbVersion(t, db, s); got != 4 {
		t.Fatalf("version %d, want 4", got)
	}
	hasBuckets(t, db, keyVolumes, keyExports, keyTokens, keyNames)
	must(t, db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(keyV1).Bucket(keyVolumes).Bucket([]byte("v")).Bucket(keySnapshots) == nil {
			return errors.New("the volume has no snapshots bucket")
		}
		b := tx.Bucket(keyV1).Bucket(keyVolumes).Bucket([]byte("v"))
		bs, err := readBackup(b, "v")
		if err != nil || bs != (BackupState{}) {
			return fmt.Errorf("backup record after migration: %+v, %v", bs, err)
		}
		return nil
	}))
}
