package state

import (
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

type attachmentRecord struct {
	V          int       `json:"v"`
	Mode       Mode      `json:"mode"`
	Generation uint64    `json:"generation"`
	Expires    time.Time `json:"expires"`
	Export     string    `json:"export"`
	TokenHash  TokenHash `json:"token_sha256"`
	LostWrites bool      `json:"lost_writes,omitempty"`
}

// exportRef is the value of exports/<export> and tokens/<hash>.
type exportRef struct {
	V      int    `json:"v"`
	Volume string `json:"volume"`
	Node   string `json:"node"`
}

func newAttachmentRecord(a Attachment) attachmentRecord {
	return attachmentRecord{V: recordVersion, Mode: a.Mode, Generation: a.Generation,
		Expires: a.Expires, Export: a.Export, TokenHash: a.TokenHash, LostWrites: a.LostWrites}
}

func (rec attachmentRecord) attachment(volume, node string) Attachment {
	return Attachment{Volume: volume, Node: node, Mode: rec.Mode, Generation: rec.Generation,
		Expires: rec.Expires, Export: rec.Export, TokenHash: rec.TokenHash, LostWrites: rec.LostWrites}
}

// AddAttachment records that a.Node attaches volume name in a.Mode with
// lease a.Expires, export a.Export and token hash a.TokenHash, and issues
// the next generation of the volume. a.Volume and a.Generation are ignored.
//
// Leases are judged at now, the caller's wall clock. A read-write
// attachment is refused while another node holds a live attachment; a
// read-only one while another node holds a live read-write one. The
// refusal is a *ConflictError (ErrConflict) naming the holder. An
// attachment that would have conflicted but has expired is taken over, as
// is the node's own earlier attachment: both are removed with their
// export names, and returned so that the caller can close their
// connections.
func (r *Registry) AddAttachment(name string, a Attachment, now time.Time) (Attachment, []Attachment, error) {
	vk, err := key("volume", name)
	if err != nil {
		return Attachment{}, nil, err
	}
	if err := checkAttachment(a); err != nil {
		return Attachment{}, nil, volumeErr(name, err)
	}
	a.Volume = name
	var revoked []Attachment
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		revoked, err = takeOver(root, b, a, now)
		if err != nil {
			return err
		}
		a, err = putAttachment(root, b, a)
		return err
	})
	if err != nil {
		return Attachment{}, nil, err
	}
	return a, revoked, nil
}

func checkAttachment(a Attachment) error {
	if _, err := key("node", a.Node); err != nil {
		return err
	}
	if !a.Mode.Valid() {
		return fmt.Errorf("attachment mode %q, want %q or %q: %w", a.Mode, ModeRW, ModeRO, ErrInvalid)
	}
	if _, err := key("export", a.Export); err != nil {
		return err
	}
	if a.TokenHash.IsZero() {
		return fmt.Errorf("attachment without a token hash: %w", ErrInvalid)
	}
	return nil
}

// conflicts reports whether held, if live, forbids the new attachment a.
func conflicts(held, a Attachment) bool {
	return held.Node != a.Node && (held.Mode == ModeRW || a.Mode == ModeRW)
}

// takeOver refuses a when a live attachment conflicts with it, else
// removes the attachments a replaces and returns them.
func takeOver(root, b *bolt.Bucket, a Attachment, now time.Time) ([]Attachment, error) {
	held, err := readAttachments(b, a.Volume)
	if err != nil {
		return nil, err
	}
	var gone []Attachment
	for _, h := range held {
		if conflicts(h, a) && h.Live(now) {
			return nil, &ConflictError{Volume: a.Volume, Holder: h.Node, Mode: string(h.Mode), Expires: h.Expires,
				ExpiresIn: h.Expires.Sub(now)}
		}
		if conflicts(h, a) || h.Node == a.Node {
			gone = append(gone, h)
		}
	}
	for _, h := range gone {
		if err := deleteAttachment(root, b, h); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// putAttachment issues the next generation and stores and indexes a.
func putAttachment(root, b *bolt.Bucket, a Attachment) (Attachment, error) {
	if err := checkIndexFree(root, a); err != nil {
		return Attachment{}, volumeErr(a.Volume, err)
	}
	gen, err := decodeUint(b.Get(keyGeneration))
	if err != nil {
		return Attachment{}, volumeErr(a.Volume, fmt.Errorf("bad generation counter: %w", err))
	}
	a.Generation = gen + 1
	if err := b.Put(keyGeneration, encodeUint(a.Generation)); err != nil {
		return Attachment{}, err
	}
	if err := putJSON(b.Bucket(keyAttachments), []byte(a.Node), newAttachmentRecord(a)); err != nil {
		return Attachment{}, err
	}
	return a, index(root, a)
}

func checkIndexFree(root *bolt.Bucket, a Attachment) error {
	if root.Bucket(keyExports).Get([]byte(a.Export)) != nil {
		return fmt.Errorf("export name %q is already issued: %w", a.Export, ErrExists)
	}
	if root.Bucket(keyTokens).Get(a.TokenHash[:]) != nil {
		return fmt.Errorf("export token is already issued: %w", ErrExists)
	}
	return nil
}

func index(root *bolt.Bucket, a Attachment) error {
	ref := exportRef{V: recordVersion, Volume: a.Volume, Node: a.Node}
	if err := putJSON(root.Bucket(keyExports), []byte(a.Export), ref); err != nil {
		return err
	}
	return putJSON(root.Bucket(keyTokens), a.TokenHash[:], ref)
}

func unindex(root *bolt.Bucket, a Attachment) error {
	if err := root.Bucket(keyExports).Delete([]byte(a.Export)); err != nil {
		return err
	}
	return root.Bucket(keyTokens).Delete(a.TokenHash[:])
}

func deleteAttachment(root, b *bolt.Bucket, a Attachment) error {
	if err := unindex(root, a); err != nil {
		return err
	}
	return b.Bucket(keyAttachments).Delete([]byte(a.Node))
}

func readAttachments(b *bolt.Bucket, volume string) ([]Attachment, error) {
	var out []Attachment
	err := b.Bucket(keyAttachments).ForEach(func(k, v []byte) error {
		var rec attachmentRecord
		if err := decodeJSON(k, v, &rec); err != nil {
			return volumeErr(volume, err)
		}
		out = append(out, rec.attachment(volume, string(k)))
		return nil
	})
	return out, err
}

// readAttachment returns node's attachment to the volume in b.
func readAttachment(b *bolt.Bucket, volume, node string) (Attachment, error) {
	var rec attachmentRecord
	ok, err := getJSON(b.Bucket(keyAttachments), []byte(node), &rec)
	if err != nil {
		return Attachment{}, volumeErr(volume, err)
	}
	if !ok {
		return Attachment{}, volumeErr(volume, fmt.Errorf("attachment of node %q: %w", node, ErrNotFound))
	}
	return rec.attachment(volume, node), nil
}

// RenewAttachment sets a new lease expiry on node's attachment and
// returns it. ErrNotFound when the node holds no attachment (it was
// removed or taken over). Whether a lapsed lease may be renewed is the
// caller's decision: an attachment nobody took over is still recorded.
// A read-write attachment of a volume that has clones is not renewed: an
// *InUseError (ErrInUse) naming them. (CloneVolume removes those; one
// recorded before it did is left for Detach.)
func (r *Registry) RenewAttachment(name, node string, expires time.Time) (Attachment, error) {
	vk, err := key("volume", name)
	if err != nil {
		return Attachment{}, err
	}
	if _, err := key("node", node); err != nil {
		return Attachment{}, err
	}
	var a Attachment
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		if a, err = readAttachment(b, name, node); err != nil {
			return err
		}
		if deps := immutable(b); a.Mode == ModeRW && len(deps) > 0 {
			return fmt.Errorf("read-write lease of node %q not renewed: %w", node, &InUseError{Volume: name, Children: deps})
		}
		a.Expires = expires
		return putJSON(b.Bucket(keyAttachments), []byte(node), newAttachmentRecord(a))
	})
	return a, err
}

// RestartLeases sets the lease expiry of every attachment, live or
// lapsed, to expires, in one transaction, and returns how many it set. The
// storage daemon calls it when it starts: it cannot tell how long it was
// down, so it gives every lease it finds a fresh term.
func (r *Registry) RestartLeases(expires time.Time) (int, error) {
	var n int
	err := r.s.update(func(root *bolt.Bucket) error {
		vols := root.Bucket(keyVolumes)
		var held []Attachment
		err := vols.ForEachBucket(func(k []byte) error {
			atts, err := readAttachments(vols.Bucket(k), string(k))
			held = append(held, atts...)
			return err
		})
		if err != nil {
			return err
		}
		// Written after the walk: bbolt forbids changing what is iterated.
		for _, a := range held {
			a.Expires = expires
			err := putJSON(vols.Bucket([]byte(a.Volume)).Bucket(keyAttachments), []byte(a.Node), newAttachmentRecord(a))
			if err != nil {
				return volumeErr(a.Volume, err)
			}
		}
		n = len(held)
		return nil
	})
	return n, err
}

// MarkLostWrites sets LostWrites on every read-write attachment of the
// volume, in one transaction, and returns those it marked. The storage
// daemon calls it when it finds that the volume's image was open for writing
// when the storage node went down uncleanly, before it serves the image.
func (r *Registry) MarkLostWrites(name string) ([]Attachment, error) {
	vk, err := key("volume", name)
	if err != nil {
		return nil, err
	}
	var marked []Attachment
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		atts, err := readAttachments(b, name)
		if err != nil {
			return err
		}
		for _, a := range atts {
			if a.Mode != ModeRW || a.LostWrites {
				continue
			}
			a.LostWrites = true
			if err := putJSON(b.Bucket(keyAttachments), []byte(a.Node), newAttachmentRecord(a)); err != nil {
				return err
			}
			marked = append(marked, a)
		}
		return nil
	})
	return marked, err
}

// RemoveAttachment removes node's attachment and its export name, and
// returns what was removed. ErrNotFound when there is none.
func (r *Registry) RemoveAttachment(name, node string) (Attachment, error) {
	vk, err := key("volume", name)
	if err != nil {
		return Attachment{}, err
	}
	if _, err := key("node", node); err != nil {
		return Attachment{}, err
	}
	var a Attachment
	err = r.s.update(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		if a, err = readAttachment(b, name, node); err != nil {
			return err
		}
		return deleteAttachment(root, b, a)
	})
	return a, err
}

// ListAttachments returns the volume's attachments, live or not, sorted
// by node.
func (r *Registry) ListAttachments(name string) ([]Attachment, error) {
	vk, err := key("volume", name)
	if err != nil {
		return nil, err
	}
	var out []Attachment
	err = r.s.view(func(root *bolt.Bucket) error {
		b, err := volumeBucket(root, vk)
		if err != nil {
			return err
		}
		out, err = readAttachments(b, name)
		return err
	})
	return out, err
}

// FindAttachmentByExport returns the attachment that was issued export.
// ErrNotFound once it is removed or taken over.
func (r *Registry) FindAttachmentByExport(export string) (Attachment, error) {
	k, err := key("export", export)
	if err != nil {
		return Attachment{}, err
	}
	return r.find(keyExports, k, fmt.Sprintf("export %q", export))
}

// FindAttachmentByToken returns the attachment whose export token hashes
// to h. ErrNotFound once it is removed or taken over.
func (r *Registry) FindAttachmentByToken(h TokenHash) (Attachment, error) {
	return r.find(keyTokens, h[:], "export token")
}

// find resolves an entry of the exports or tokens index.
func (r *Registry) find(index, k []byte, what string) (Attachment, error) {
	var a Attachment
	err := r.s.view(func(root *bolt.Bucket) error {
		var ref exportRef
		ok, err := getJSON(root.Bucket(index), k, &ref)
		if err == nil && !ok {
			err = ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		b, err := volumeBucket(root, []byte(ref.Volume))
		if err != nil {
			return err
		}
		a, err = readAttachment(b, ref.Volume, ref.Node)
		return err
	})
	return a, err
}
