package state

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const lease = 30 * time.Second

// att is an attachment request by node with export name export, whose
// token is "token-"+export and whose lease runs from t0.
func att(node string, mode Mode, export string) Attachment {
	return Attachment{Node: node, Mode: mode, Expires: t0.Add(lease), Export: export,
		TokenHash: HashToken("token-" + export)}
}

func attachedVolume(t *testing.T) *Registry {
	t.Helper()
	r := openRegistry(t)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20}))
	return r
}

func TestAddAttachmentIssuesGenerations(t *testing.T) {
	r := attachedVolume(t)
	a, revoked, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	if a.Generation != 1 || a.Volume != "v" || a.Node != "n1" || len(revoked) != 0 {
		t.Fatalf("first attach: %+v, revoked %v", a, revoked)
	}
	_, err = r.RemoveAttachment("v", "n1")
	must(t, err)
	b, _, err := r.AddAttachment("v", att("n2", ModeRW, "e2"), t0)
	must(t, err)
	if b.Generation != 2 {
		t.Fatalf("generation after detach %d, want 2 (never reused)", b.Generation)
	}
}

func TestSecondWriterConflicts(t *testing.T) {
	r := attachedVolume(t)
	a, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	for _, mode := range []Mode{ModeRW, ModeRO} {
		_, _, err = r.AddAttachment("v", att("n2", mode, "e2"), t0.Add(time.Second))
		var c *ConflictError
		if !errors.As(err, &c) || !errors.Is(err, ErrConflict) {
			t.Fatalf("%s beside live rw: error %v, want *ConflictError", mode, err)
		}
		if c.Holder != "n1" || c.Mode != string(ModeRW) || !c.Expires.Equal(a.Expires) || c.Volume != "v" ||
			c.ExpiresIn != lease-time.Second {
			t.Fatalf("conflict %+v", c)
		}
		if !strings.Contains(err.Error(), `node "n1"`) || !strings.Contains(err.Error(), "read-write") {
			t.Fatalf("conflict text %q", err)
		}
	}
	// Refusals change nothing: no generation spent, no index entry.
	atts, _ := r.ListAttachments("v")
	if len(atts) != 1 || atts[0] != a {
		t.Fatalf("attachments after refusals: %+v", atts)
	}
	_, err = r.FindAttachmentByExport("e2")
	wantErr(t, err, ErrNotFound)
	_, err = r.RemoveAttachment("v", "n1")
	must(t, err)
	b, _, err := r.AddAttachment("v", att("n2", ModeRW, "e2"), t0)
	must(t, err)
	if b.Generation != 2 {
		t.Fatalf("generation %d, want 2", b.Generation)
	}
}

func TestReadersShareButExcludeWriters(t *testing.T) {
	r := attachedVolume(t)
	_, _, err := r.AddAttachment("v", att("n1", ModeRO, "e1"), t0)
	must(t, err)
	_, _, err = r.AddAttachment("v", att("n2", ModeRO, "e2"), t0)
	must(t, err)
	_, _, err = r.AddAttachment("v", att("n3", ModeRW, "e3"), t0)
	wantErr(t, err, ErrConflict)
	atts, _ := r.ListAttachments("v")
	if len(atts) != 2 || atts[0].Node != "n1" || atts[1].Node != "n2" {
		t.Fatalf("attachments %+v", atts)
	}
}

func TestExpiredWriterIsTakenOver(t *testing.T) {
	r := attachedVolume(t)
	old, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	now := old.Expires // a lease is dead at its expiry
	a, revoked, err := r.AddAttachment("v", att("n2", ModeRW, "e2"), now)
	must(t, err)
	if len(revoked) != 1 || revoked[0] != old {
		t.Fatalf("revoked %+v, want %+v", revoked, old)
	}
	if a.Generation != 2 {
		t.Fatalf("generation %d", a.Generation)
	}
	_, err = r.FindAttachmentByExport("e1")
	wantErr(t, err, ErrNotFound)
	_, err = r.RenewAttachment("v", "n1", now.Add(lease))
	wantErr(t, err, ErrNotFound)
}

func TestExpiredReaderStaysBesideNewReader(t *testing.T) {
	r := attachedVolume(t)
	_, _, err := r.AddAttachment("v", att("n1", ModeRO, "e1"), t0)
	must(t, err)
	n2 := att("n2", ModeRO, "e2")
	n2.Expires = t0.Add(time.Hour + lease)
	_, revoked, err := r.AddAttachment("v", n2, t0.Add(time.Hour))
	must(t, err)
	if len(revoked) != 0 {
		t.Fatalf("a reader revoked %v", revoked)
	}
	_, _, err = r.AddAttachment("v", att("n3", ModeRW, "e3"), t0.Add(time.Hour))
	wantErr(t, err, ErrConflict) // n2 is live
	_, revoked, err = r.AddAttachment("v", att("n3", ModeRW, "e3"), t0.Add(2*time.Hour))
	must(t, err)
	if len(revoked) != 2 {
		t.Fatalf("writer revoked %v, want both expired readers", revoked)
	}
}

func TestSameNodeReattachReplaces(t *testing.T) {
	r := attachedVolume(t)
	old, _, err := r.AddAttachment("v", att("n1", ModeRO, "e1"), t0)
	must(t, err)
	a, revoked, err := r.AddAttachment("v", att("n1", ModeRW, "e2"), t0)
	must(t, err)
	if len(revoked) != 1 || revoked[0] != old || a.Generation != 2 || a.Mode != ModeRW {
		t.Fatalf("reattach %+v revoked %+v", a, revoked)
	}
	atts, _ := r.ListAttachments("v")
	if len(atts) != 1 || atts[0] != a {
		t.Fatalf("attachments %+v", atts)
	}
}

func TestAddAttachmentRefusesBadInput(t *testing.T) {
	r := attachedVolume(t)
	bad := map[string]Attachment{
		"no node":  att("", ModeRW, "e"),
		"mode":     att("n", "rx", "e"),
		"export":   att("n", ModeRW, ""),
		"no token": {Node: "n", Mode: ModeRO, Export: "e"},
	}
	for name, a := range bad {
		if _, _, err := r.AddAttachment("v", a, t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v, want ErrInvalid", name, err)
		}
	}
	_, _, err := r.AddAttachment("nope", att("n", ModeRW, "e"), t0)
	wantErr(t, err, ErrNotFound)
}

func TestExportAndTokenAreUnique(t *testing.T) {
	r := attachedVolume(t)
	must(t, r.CreateVolume(Volume{Name: "w"}))
	_, _, err := r.AddAttachment("v", att("n1", ModeRO, "e1"), t0)
	must(t, err)
	_, _, err = r.AddAttachment("w", att("n1", ModeRO, "e1"), t0)
	wantErr(t, err, ErrExists)
	dupToken := att("n1", ModeRO, "e2")
	dupToken.TokenHash = HashToken("token-e1")
	_, _, err = r.AddAttachment("w", dupToken, t0)
	wantErr(t, err, ErrExists)
}

func TestFindAttachment(t *testing.T) {
	r := attachedVolume(t)
	a, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	got, err := r.FindAttachmentByExport("e1")
	must(t, err)
	if got != a {
		t.Fatalf("by export %+v, want %+v", got, a)
	}
	got, err = r.FindAttachmentByToken(HashToken("token-e1"))
	must(t, err)
	if got != a {
		t.Fatalf("by token %+v, want %+v", got, a)
	}
	_, err = r.FindAttachmentByToken(HashToken("wrong"))
	wantErr(t, err, ErrNotFound)
	_, err = r.FindAttachmentByExport("")
	wantErr(t, err, ErrInvalid)
}

func TestRenewAttachment(t *testing.T) {
	r := attachedVolume(t)
	a, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	next := a.Expires.Add(lease)
	b, err := r.RenewAttachment("v", "n1", next)
	must(t, err)
	if !b.Expires.Equal(next) || b.Generation != a.Generation || b.Export != a.Export {
		t.Fatalf("renewed %+v", b)
	}
	got, _ := r.FindAttachmentByExport("e1")
	if !got.Expires.Equal(next) {
		t.Fatalf("stored expiry %v, want %v", got.Expires, next)
	}
	_, err = r.RenewAttachment("v", "n2", next)
	wantErr(t, err, ErrNotFound)
	_, err = r.RenewAttachment("nope", "n1", next)
	wantErr(t, err, ErrNotFound)
	_, err = r.RenewAttachment("v", "", next)
	wantErr(t, err, ErrInvalid)
}

func TestRemoveAttachment(t *testing.T) {
	r := attachedVolume(t)
	a, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	got, err := r.RemoveAttachment("v", "n1")
	must(t, err)
	if got != a {
		t.Fatalf("removed %+v, want %+v", got, a)
	}
	_, err = r.RemoveAttachment("v", "n1")
	wantErr(t, err, ErrNotFound)
	_, err = r.FindAttachmentByToken(a.TokenHash)
	wantErr(t, err, ErrNotFound)
	_, err = r.ListAttachments("nope")
	wantErr(t, err, ErrNotFound)
}

func TestTokenHashText(t *testing.T) {
	h := HashToken("secret")
	text, err := h.MarshalText()
	must(t, err)
	var back TokenHash
	must(t, back.UnmarshalText(text))
	if back != h || h.IsZero() || !(TokenHash{}).IsZero() {
		t.Fatalf("round trip %s -> %s", h, back)
	}
	if err := back.UnmarshalText([]byte("abc")); err == nil {
		t.Fatal("short hash accepted")
	}
}

func TestConcurrentWritersOneWins(t *testing.T) {
	r := attachedVolume(t)
	const nodes = 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, conflicts := 0, 0
	for i := range nodes {
		wg.Go(func() {
			node := fmt.Sprintf("n%d", i)
			_, _, err := r.AddAttachment("v", att(node, ModeRW, "e-"+node), t0)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, ErrConflict):
				conflicts++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won != 1 || conflicts != nodes-1 {
		t.Fatalf("%d writers attached, %d refused; want 1 and %d", won, conflicts, nodes-1)
	}
}

func TestConcurrentReadersGetDistinctGenerations(t *testing.T) {
	r := attachedVolume(t)
	const nodes = 20
	var wg sync.WaitGroup
	gens := make([]uint64, nodes)
	for i := range nodes {
		wg.Go(func() {
			node := fmt.Sprintf("n%d", i)
			a, _, err := r.AddAttachment("v", att(node, ModeRO, "e-"+node), t0)
			if err != nil {
				t.Error(err)
			}
			gens[i] = a.Generation
		})
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for _, g := range gens {
		if g < 1 || g > nodes || seen[g] {
			t.Fatalf("generations %v are not 1..%d each once", gens, nodes)
		}
		seen[g] = true
	}
}

func TestFailedReattachRestoresTakenOver(t *testing.T) {
	r := attachedVolume(t)
	must(t, r.CreateVolume(Volume{Name: "w"}))
	_, _, err := r.AddAttachment("w", att("n9", ModeRO, "taken"), t0)
	must(t, err)
	old, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	// The re-attach first revokes n1's attachment, then finds its export
	// name taken: the whole transaction, revocation included, is undone.
	_, _, err = r.AddAttachment("v", att("n1", ModeRW, "taken"), t0)
	wantErr(t, err, ErrExists)
	got, err := r.FindAttachmentByExport("e1")
	must(t, err)
	if got != old {
		t.Fatalf("after failed re-attach %+v, want %+v", got, old)
	}
	a, _, err := r.AddAttachment("v", att("n1", ModeRW, "e2"), t0)
	must(t, err)
	if a.Generation != 2 {
		t.Fatalf("generation %d, want 2 (failed attempt spent none)", a.Generation)
	}
}

// Leases found at a restart all get the term given, lapsed ones too, in
// every volume; they survive closing the database; the rest of each
// attachment stays as it was.
func TestRestartLeases(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	r, err := OpenRegistry(path)
	must(t, err)
	must(t, r.CreateVolume(Volume{Name: "v", Size: 1 << 20}))
	must(t, r.CreateVolume(Volume{Name: "w", Size: 1 << 20}))
	must(t, r.CreateVolume(Volume{Name: "empty", Size: 1 << 20}))
	rw, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	lapsed := att("n2", ModeRO, "e2")
	lapsed.Expires = t0.Add(-time.Hour)
	ro, _, err := r.AddAttachment("w", lapsed, t0.Add(-2*time.Hour))
	must(t, err)
	must(t, r.Close())

	r, err = OpenRegistry(path)
	must(t, err)
	defer r.Close()
	restart := t0.Add(5 * time.Minute)
	n, err := r.RestartLeases(restart)
	must(t, err)
	if n != 2 {
		t.Fatalf("restarted %d leases, want 2", n)
	}
	for _, want := range []Attachment{rw, ro} {
		got, err := r.FindAttachmentByExport(want.Export)
		must(t, err)
		want.Expires = restart
		if got != want {
			t.Fatalf("after restart %+v, want %+v", got, want)
		}
	}
	// The lapsed reader is live again: a writer must wait for it.
	_, _, err = r.AddAttachment("w", att("n3", ModeRW, "e3"), restart.Add(-time.Second))
	wantErr(t, err, ErrConflict)
	if n, err := openRegistry(t).RestartLeases(restart); err != nil || n != 0 {
		t.Fatalf("empty registry: %d %v", n, err)
	}
}

func TestMarkLostWrites(t *testing.T) {
	r := attachedVolume(t)
	_, _, err := r.AddAttachment("v", att("n1", ModeRW, "e1"), t0)
	must(t, err)
	must(t, r.CreateVolume(Volume{Name: "w", Size: 1 << 20}))
	_, _, err = r.AddAttachment("w", att("n2", ModeRO, "e2"), t0)
	must(t, err)
	marked, err := r.MarkLostWrites("v")
	must(t, err)
	if len(marked) != 1 || marked[0].Node != "n1" || !marked[0].LostWrites {
		t.Fatalf("marked %+v, want n1's rw attachment", marked)
	}
	if marked, err := r.MarkLostWrites("w"); err != nil || len(marked) != 0 {
		t.Fatalf("read-only attachment marked: %+v, %v", marked, err)
	}
	if marked, err := r.MarkLostWrites("v"); err != nil || len(marked) != 0 {
		t.Fatalf("marked twice: %+v, %v", marked, err)
	}
	// The mark is kept by a renewal and read back by every lookup.
	_, err = r.RenewAttachment("v", "n1", t0.Add(2*lease))
	must(t, err)
	a, err := r.FindAttachmentByToken(HashToken("token-e1"))
	must(t, err)
	if !a.LostWrites {
		t.Fatalf("mark lost after renewal: %+v", a)
	}
	// A new attachment starts clean.
	_, err = r.RemoveAttachment("v", "n1")
	must(t, err)
	b, _, err := r.AddAttachment("v", att("n1", ModeRW, "e3"), t0)
	must(t, err)
	if b.LostWrites {
		t.Fatalf("new attachment marked: %+v", b)
	}
	if _, err := r.MarkLostWrites("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown volume: %v", err)
	}
}
