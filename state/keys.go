package state

// Bucket and record keys. They never change at run time; see doc.go for
// the tree they form.
var (
	keyV1      = []byte("v1")      // top bucket of schema v1
	keyVersion = []byte("version") // v1/version: decimal migration level
	keyKind    = []byte("kind")    // v1/kind: "registry" or "node"

	keyVolumes     = []byte("volumes")     // v1/volumes
	keyExports     = []byte("exports")     // registry: v1/exports
	keyTokens      = []byte("tokens")      // registry: v1/tokens
	keyRecord      = []byte("record")      // registry: volumes/<name>/record
	keyGeneration  = []byte("generation")  // registry: volumes/<name>/generation
	keyAttachments = []byte("attachments") // registry: volumes/<name>/attachments
	keyChildren    = []byte("children")    // registry: volumes/<name>/children
	keySnapshots   = []byte("snapshots")   // registry: volumes/<name>/snapshots (schema 2)
	keyNames       = []byte("names")       // registry: v1/names (pool name claims, schema 3)
	keyBackup      = []byte("backup")      // registry: volumes/<name>/backup (schema 4)

	keyMounts = []byte("mounts") // node: v1/mounts
)
