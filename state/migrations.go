package state

import (
	"bytes"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A migration moves a database of one kind from version-1 to version. It
// runs inside the transaction that records the new version, so a failed
// or interrupted migration leaves the database as it was.
//
// Rules: versions are 1, 2, 3... in slice order; a released migration is
// never edited, only followed by a new one; every migration has a test
// (TestEveryMigrationHasATest fails otherwise).
type migration struct {
	version int
	name    string
	apply   func(tx *bolt.Tx) error
}

// schema names a kind of database and the migrations that build it.
type schema struct {
	kind       string
	migrations []migration
}

func registrySchema() schema {
	return schema{kind: "registry", migrations: []migration{
		{version: 1, name: "create volumes, exports and tokens buckets", apply: registryV1},
		{version: 2, name: "create a snapshots bucket in every volume", apply: registryV2},
		{version: 3, name: "create names bucket (pool name claims)", apply: registryV3},
		{version: 4, name: "backup records; hidden snapshots that backups keep", apply: registryV4},
	}}
}

func nodeSchema() schema {
	return schema{kind: "node", migrations: []migration{
		{version: 1, name: "create volumes and mounts buckets", apply: nodeV1},
	}}
}

func registryV1(tx *bolt.Tx) error {
	return createBuckets(tx, keyVolumes, keyExports, keyTokens)
}

// registryV2 gives every volume a snapshots bucket. Clones recorded before
// have an empty value in their parent's children bucket: they read the
// parent's own image, which stays immutable for them (see immutable).
func registryV2(tx *bolt.Tx) error {
	vols := tx.Bucket(keyV1).Bucket(keyVolumes)
	return vols.ForEachBucket(func(k []byte) error {
		_, err := vols.Bucket(k).CreateBucketIfNotExists(keySnapshots)
		return err
	})
}

// registryV3 adds the pool's name claims (see pool.go).
func registryV3(tx *bolt.Tx) error {
	return createBuckets(tx, keyNames)
}

// registryV4 adds nothing to existing volumes (none has a backup record
// yet: BackupState reads as zero). The version itself is the point: a
// daemon of schema 3 would merge away the hidden snapshots a backup
// keeps as its base (it takes every hidden snapshot without clones for
// an abandoned one), so it must refuse this registry.
func registryV4(tx *bolt.Tx) error {
	if tx.Bucket(keyV1).Bucket(keyVolumes) == nil {
		return fmt.Errorf("no %s bucket", keyVolumes)
	}
	return nil
}

func nodeV1(tx *bolt.Tx) error {
	return createBuckets(tx, keyVolumes, keyMounts)
}

func createBuckets(tx *bolt.Tx, names ...[]byte) error {
	root, err := tx.CreateBucketIfNotExists(keyV1)
	if err != nil {
		return err
	}
	for _, n := range names {
		if _, err := root.CreateBucketIfNotExists(n); err != nil {
			return fmt.Errorf("create bucket %s: %w", n, err)
		}
	}
	return nil
}

// migrate brings db up to the schema's latest version. A database that is
// already current costs one read transaction.
func migrate(db *bolt.DB, s schema) error {
	var current int
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		current, err = readVersion(tx, s)
		return err
	})
	if err != nil || current == latest(s) {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error { return runMigrations(tx, s) })
}

func latest(s schema) int { return len(s.migrations) }

// runMigrations applies the pending migrations and records the version.
func runMigrations(tx *bolt.Tx, s schema) error {
	current, err := readVersion(tx, s)
	if err != nil {
		return err
	}
	for _, m := range s.migrations[current:] {
		if err := m.apply(tx); err != nil {
			return fmt.Errorf("migrate %s database to version %d (%s): %w", s.kind, m.version, m.name, err)
		}
	}
	root := tx.Bucket(keyV1)
	if root == nil {
		return fmt.Errorf("%s migrations created no %s bucket", s.kind, keyV1)
	}
	if err := root.Put(keyKind, []byte(s.kind)); err != nil {
		return err
	}
	return root.Put(keyVersion, encodeUint(uint64(latest(s))))
}

// readVersion returns the migration level of the database: 0 for an empty
// file. It refuses foreign files, the other kind, and newer schemas.
func readVersion(tx *bolt.Tx, s schema) (int, error) {
	root := tx.Bucket(keyV1)
	if root == nil {
		return 0, checkEmpty(tx)
	}
	if got := root.Get(keyKind); !bytes.Equal(got, []byte(s.kind)) {
		return 0, fmt.Errorf("database holds %q state, want %q: %w", got, s.kind, ErrSchema)
	}
	v, err := decodeUint(root.Get(keyVersion))
	if err != nil {
		return 0, fmt.Errorf("bad schema version: %v: %w", err, ErrSchema)
	}
	if v > uint64(latest(s)) {
		return 0, fmt.Errorf("%s database is at schema version %d, this netvol knows up to %d (downgrade?): %w",
			s.kind, v, latest(s), ErrSchema)
	}
	return int(v), nil
}

// checkEmpty refuses a bbolt file that has content but no v1 bucket.
func checkEmpty(tx *bolt.Tx) error {
	if k, _ := tx.Cursor().First(); k != nil {
		return fmt.Errorf("file holds buckets that are not netvol's (first %q): %w", k, ErrSchema)
	}
	return nil
}
