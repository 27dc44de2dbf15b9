package volume

import (
	"fmt"
	"io/fs"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/internal/units"
	"github.com/netvol/netvol/volume/backend"
)

// CheckName refuses a volume name that is not a plain, bounded file name
// (names.CheckVolume: Docker's own rule, bounded, with no room for a path
// escape).
func CheckName(name string) error { return names.CheckVolume(name) }

// optionTypes says which volume types take each option; the allowlist.
var optionTypes = map[string][]string{
	"type":          {backend.TypeNFS, backend.TypeNBD},
	"size":          {backend.TypeNBD},
	"from":          {backend.TypeNBD},
	"from-snapshot": {backend.TypeNBD},
	"from-backup":   {backend.TypeNBD},
	"backup-every":  {backend.TypeNBD},
	"backup-keep":   {backend.TypeNBD},
	"uid":           {backend.TypeNFS, backend.TypeNBD},
	"gid":           {backend.TypeNFS, backend.TypeNBD},
	"mode":          {backend.TypeNFS, backend.TypeNBD},
	"fs":            {backend.TypeNBD},
	"mkfs-opts":     {backend.TypeNBD},
	"mount-opts":    {backend.TypeNFS, backend.TypeNBD},
	"on-remove":     {backend.TypeNFS},
	"server":        {backend.TypeNFS, backend.TypeNBD},
	"export":        {backend.TypeNFS},
}

// acceptedOptions lists the allowlist for error messages.
func acceptedOptions() string {
	var names []string
	for k := range optionTypes {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Parsed is a volume's type and its validated options.
type Parsed struct {
	Type    string
	Options backend.Options
}

// optionParsers fill one field of backend.Options each.
var optionParsers = map[string]func(v string, o *backend.Options) error{
	"size": parseSizeOpt,
	"from": func(v string, o *backend.Options) error { o.From = v; return CheckName(v) },
	"from-snapshot": func(v string, o *backend.Options) error {
		o.FromSnapshot = v
		if err := names.CheckVolume(v); err != nil {
			return fmt.Errorf("option from-snapshot: snapshot name %q: want %s: %w", v, names.VolumeRule, backend.ErrInvalid)
		}
		return nil
	},
	"from-backup":  parseFromBackup,
	"backup-every": parseBackupEvery,
	"backup-keep":  parseBackupKeep,
	"uid":          func(v string, o *backend.Options) error { return parseID("uid", v, &o.UID) },
	"gid":          func(v string, o *backend.Options) error { return parseID("gid", v, &o.GID) },
	"mode":         parseMode,
	"fs":           parseFS,
	"mkfs-opts":    func(v string, o *backend.Options) error { o.MkfsOpts = strings.Fields(v); return nil },
	"mount-opts":   parseMountOpts,
	"on-remove":    parseOnRemove,
	"server":       parseServer,
	"export":       parseExport,
}

// ParseOptions checks Docker's options against the allowlist and parses
// them. defaultType and defaultSize apply when type or size is absent.
func ParseOptions(raw map[string]string, defaultType string, defaultSize int64) (Parsed, error) {
	p := Parsed{Type: defaultType, Options: backend.Options{UID: -1, GID: -1}}
	if t, ok := raw["type"]; ok {
		p.Type = t
	}
	if p.Type != backend.TypeNFS && p.Type != backend.TypeNBD {
		return Parsed{}, fmt.Errorf("option type=%q: want nfs or nbd: %w", p.Type, backend.ErrInvalid)
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	slices.Sort(keys) // the first bad option reported is always the same
	for _, k := range keys {
		if err := parseOption(p.Type, k, raw[k], &p.Options); err != nil {
			return Parsed{}, err
		}
	}
	if p.Options.FromSnapshot != "" && p.Options.From == "" {
		return Parsed{}, fmt.Errorf("option from-snapshot=%q needs from=VOLUME, the volume it is a snapshot of: %w", p.Options.FromSnapshot, backend.ErrInvalid)
	}
	if p.Options.FromBackup != "" && p.Options.From != "" {
		return Parsed{}, fmt.Errorf("options from-backup and from: give one (a restore or a clone): %w", backend.ErrInvalid)
	}
	if p.Type == backend.TypeNBD {
		if p.Options.Size == 0 && p.Options.FromBackup == "" { // a restore: the backup's size
			p.Options.Size = defaultSize
		}
		if p.Options.FS == "" {
			p.Options.FS = "ext4"
		}
	}
	return p, nil
}

func parseOption(typ, k, v string, o *backend.Options) error {
	types, ok := optionTypes[k]
	if !ok {
		return fmt.Errorf("unknown option %q: the accepted options are %s: %w", k, acceptedOptions(), backend.ErrInvalid)
	}
	if !slices.Contains(types, typ) {
		return fmt.Errorf("option %q does not apply to type=%s volumes (only to %s): %w",
			k, typ, strings.Join(types, ", "), backend.ErrInvalid)
	}
	if k == "server" && typ == backend.TypeNBD {
		return parsePoolServer(v, o)
	}
	if parse := optionParsers[k]; parse != nil {
		return parse(v, o)
	}
	return nil
}

// backupIDRe is the shape of a backup ID: VOLUME.TIME.RANDOM (the
// storage daemon checks it whole).
var backupIDRe = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}\.[0-9]{8}T[0-9]{6}Z\.[0-9a-f]{8}$`)

func parseFromBackup(v string, o *backend.Options) error {
	if !backupIDRe.MatchString(v) {
		return fmt.Errorf("option from-backup=%q: want a backup ID, VOLUME.TIME.RANDOM (netvol volume backup ls lists them): %w", v, backend.ErrInvalid)
	}
	o.FromBackup = v
	return nil
}

func parseBackupEvery(v string, o *backend.Options) error {
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Minute {
		return fmt.Errorf("option backup-every=%q: want a duration of a minute or more, such as 1h or 30m: %w", v, backend.ErrInvalid)
	}
	o.BackupEvery = v
	return nil
}

func parseBackupKeep(v string, o *backend.Options) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 100000 {
		return fmt.Errorf("option backup-keep=%q: want a number of backups, 1 or more: %w", v, backend.ErrInvalid)
	}
	o.BackupKeep = v
	return nil
}

// parsePoolServer takes the storage server of a pool an nbd volume is
// created on: host:port, as --server names it.
func parsePoolServer(v string, o *backend.Options) error {
	host, port, err := net.SplitHostPort(v)
	if len(v) > 260 || err != nil || !hostRe.MatchString(strings.Trim(host, "[]")) && !hostRe.MatchString("["+host+"]") {
		return fmt.Errorf("option server=%q: want a storage server of the pool as --server names it, host:port: %w", v, backend.ErrInvalid)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("option server=%q: port %q: want 1 to 65535: %w", v, port, backend.ErrInvalid)
	}
	o.Server = v
	return nil
}

func parseSizeOpt(v string, o *backend.Options) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return fmt.Errorf("option size: %w: %w", err, backend.ErrInvalid)
	}
	o.Size = n
	return nil
}

// maxID is the largest uid or gid Linux has (2^32-2; -1 means "unset").
const maxID = 1<<32 - 2

func parseID(name, v string, dst *int) error {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n > maxID || strings.HasPrefix(v, "+") {
		return fmt.Errorf("option %s=%q: want a number from 0 to %d: %w", name, v, uint64(maxID), backend.ErrInvalid)
	}
	*dst = int(n)
	return nil
}

func parseMode(v string, o *backend.Options) error {
	n, err := strconv.ParseUint(v, 8, 32)
	if err != nil || n > 0o777 || v == "" || strings.HasPrefix(v, "+") {
		return fmt.Errorf("option mode=%q: want octal permission bits from 0 to 0777 (such as 0755 or 770): %w", v, backend.ErrInvalid)
	}
	if n == 0 {
		// Zero means "leave it" in backend.Options; keep the explicit request.
		return fmt.Errorf("option mode=%q: a volume nobody can open is not useful: want 1 to 0777: %w", v, backend.ErrInvalid)
	}
	o.Mode = fs.FileMode(n)
	return nil
}

func parseFS(v string, o *backend.Options) error {
	if v != "ext4" {
		return fmt.Errorf("option fs=%q: want ext4: %w", v, backend.ErrInvalid)
	}
	o.FS = v
	return nil
}

func parseMountOpts(v string, o *backend.Options) error {
	for _, opt := range strings.Split(v, ",") {
		if opt == "" {
			return fmt.Errorf("option mount-opts=%q: empty mount option: %w", v, backend.ErrInvalid)
		}
		o.MountOpts = append(o.MountOpts, opt)
	}
	return nil
}

func parseOnRemove(v string, o *backend.Options) error {
	switch v {
	case "delete", "retain", "archive":
		o.OnRemove = v
		return nil
	}
	return fmt.Errorf("option on-remove=%q: want delete, retain or archive: %w", v, backend.ErrInvalid)
}

// hostRe accepts DNS names and IPv4 addresses; IPv6 literals in brackets.
var hostRe = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])$`)

func parseServer(v string, o *backend.Options) error {
	if len(v) > 253 || !hostRe.MatchString(v) {
		return fmt.Errorf("option server=%q: want a host name or IP address: %w", v, backend.ErrInvalid)
	}
	o.Server = v
	return nil
}

// exportRe: an absolute path of plain components; path.Clean leaves it alone.
var exportRe = regexp.MustCompile(`^(/[a-zA-Z0-9_][a-zA-Z0-9_.-]*)+$`)

func parseExport(v string, o *backend.Options) error {
	if len(v) > 1024 || !exportRe.MatchString(v) || strings.Contains(v, "/..") {
		return fmt.Errorf("option export=%q: want an absolute path such as /srv/nfs/vols, without '..': %w", v, backend.ErrInvalid)
	}
	o.Export = v
	return nil
}
