package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/netvol/netvol/internal/names"
	"github.com/netvol/netvol/server/api"

	"github.com/netvol/netvol/nbd"
	"github.com/netvol/netvol/qcow2"
	"github.com/netvol/netvol/state"
)

// The volume's liveImage is the export's Backend; it answers WRITE_ZEROES
// itself (as the image does), so the server never falls back to Discard
// or zero buffers.
var (
	_ nbd.ZeroWriter = (*qcow2.Image)(nil)
	_ nbd.ZeroWriter = lostWritesBackend{}
)

func checkNodeName(node string) error { return names.CheckNode(node) }

// Attach issues an attachment of volume to node. One read-write attachment
// per volume: another node's live one is a conflict naming the holder; an
// expired one, and node's own earlier one, are taken over and their exports
// revoked (state.AddAttachment decides). Revoking waits for the requests
// in flight on the old connections, so once Attach returns no write of a
// fenced holder can land.
func (s *Service) Attach(ctx context.Context, volume string, req api.AttachRequest) (api.Grant, error) {
	mode := state.Mode(req.Mode)
	if err := checkNodeName(req.Node); err != nil {
		return api.Grant{}, err
	}
	if !mode.Valid() {
		return api.Grant{}, fmt.Errorf("mode %q: want \"rw\" or \"ro\": %w", req.Mode, state.ErrInvalid)
	}
	if err := s.acquire(ctx); err != nil {
		return api.Grant{}, err
	}
	defer s.release()
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return api.Grant{}, err
	}
	if err := s.checkAttachable(v.Name, mode); err != nil {
		return api.Grant{}, err
	}
	if _, err := s.image(v); err != nil {
		return api.Grant{}, err
	}
	token := newToken()
	now := s.cfg.Now()
	a, revoked, err := s.reg.AddAttachment(volume, state.Attachment{Node: req.Node, Mode: mode,
		Expires: now.Add(s.cfg.LeaseTTL).UTC(), Export: volume + "." + token, TokenHash: state.HashToken(token)}, now)
	if err != nil {
		return api.Grant{}, err
	}
	var fenced []string
	for _, r := range revoked {
		s.revoke(r.Export)
		if r.Mode == state.ModeRW {
			fenced = append(fenced, r.Node)
		}
		if r.Node != req.Node {
			s.counts.takeovers.Add(1)
		}
	}
	s.counts.attaches.Add(1)
	return api.Grant{Export: a.Export, Generation: a.Generation, Expires: a.Expires,
		ExpiresInMS: floorMS(a.Expires.Sub(now)), Fenced: fenced, Instance: s.instance}, nil
}

// checkAttachable refuses read-write access to a volume whose own image
// clones read (made before snapshots; see state.Registry.CreateSnapshot).
func (s *Service) checkAttachable(volume string, mode state.Mode) error {
	if mode != state.ModeRW {
		return nil
	}
	children, err := s.legacyClones(volume)
	if err != nil || len(children) == 0 {
		return err
	}
	return &state.InUseError{Volume: volume, Children: children}
}

// Renew extends node's lease on volume. not_found once the attachment was
// detached or taken over; a lapsed lease nobody took over is renewed.
// in_use for a read-write attachment of a volume that has clones (which
// must not change): cloning removes such attachments, so this is only an
// attachment recorded before it did.
func (s *Service) Renew(ctx context.Context, volume, node string) (api.Lease, error) {
	if err := s.acquire(ctx); err != nil {
		return api.Lease{}, err
	}
	defer s.release()
	now := s.cfg.Now()
	a, err := s.reg.RenewAttachment(volume, node, now.Add(s.cfg.LeaseTTL).UTC())
	if err != nil {
		return api.Lease{}, err
	}
	s.counts.renewals.Add(1)
	v, err := s.reg.GetVolume(volume)
	if err != nil {
		return api.Lease{}, err
	}
	return api.Lease{Expires: a.Expires, ExpiresInMS: floorMS(a.Expires.Sub(now)), Instance: s.instance,
		LostWrites: a.LostWrites, Size: v.Size}, nil
}

// Detach removes node's attachment of volume and closes its connections.
func (s *Service) Detach(ctx context.Context, volume, node string) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	a, err := s.reg.RemoveAttachment(volume, node)
	if err != nil {
		return err
	}
	s.revoke(a.Export)
	return nil
}

// revoke fences an export name: its connections are closed and the server
// refuses it from then on. Call with the lock.
func (s *Service) revoke(export string) {
	if e := s.exports[export]; e != nil {
		delete(s.exports, export)
		e.Revoke()
	}
	s.growth.forget(export)
}

// Open implements nbd.Exports: it serves export names issued by Attach
// whose attachment is still recorded and live, and read-write ones only
// while the volume has no clones. Every refusal is nbd.ErrUnknownExport,
// so a client learns nothing from it.
func (s *Service) Open(ctx context.Context, name string) (*nbd.Export, error) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return nil, nbd.ErrUnknownExport
	}
	if err := s.acquire(ctx); err != nil {
		return nil, err
	}
	defer s.release()
	a, err := s.reg.FindAttachmentByToken(state.HashToken(name[i+1:]))
	if err != nil || a.Export != name || !a.Live(s.cfg.Now()) {
		return nil, nbd.ErrUnknownExport
	}
	if err := s.checkAttachable(a.Volume, a.Mode); err != nil {
		return nil, nbd.ErrUnknownExport
	}
	if e := s.exports[name]; e != nil {
		return e, nil
	}
	v, err := s.reg.GetVolume(a.Volume)
	if err != nil {
		return nil, err
	}
	img, err := s.image(v)
	if err != nil {
		return nil, err
	}
	if a.Mode == state.ModeRW && !a.LostWrites {
		// image may just have marked it.
		if a, err = s.reg.FindAttachmentByToken(state.HashToken(name[i+1:])); err != nil {
			return nil, nbd.ErrUnknownExport
		}
	}
	var backend nbd.Backend = img
	if a.LostWrites {
		backend = lostWritesBackend{liveImage: img}
	}
	e := &nbd.Export{Name: name, Description: "netvol volume " + a.Volume,
		Backend: backend, ReadOnly: a.Mode != state.ModeRW}
	s.exports[name] = e
	return e, nil
}

// lostWritesBackend serves an image to an attachment that may have lost
// writes when the storage node went down uncleanly: every flush (and FUA
// write) fails, so its client never takes what it wrote before for durable.
// A kernel client's ext4 aborts its journal on the error; the next mount
// replays it up to the last flush that really succeeded.
type lostWritesBackend struct {
	*liveImage
}

func (b lostWritesBackend) Flush() error {
	return fmt.Errorf("volume %q: the storage node went down uncleanly while this attachment could write, and writes it had not flushed may be lost; flushes fail until the volume is detached and attached again", b.liveImage.volume)
}

// List implements nbd.Exports: the volumes by name. Those are not export
// names (those are secret); a client cannot open them.
func (s *Service) List(context.Context) ([]nbd.ExportInfo, error) {
	vols, err := s.reg.ListVolumes()
	if err != nil {
		return nil, err
	}
	out := make([]nbd.ExportInfo, 0, len(vols))
	for _, v := range vols {
		out = append(out, nbd.ExportInfo{Name: v.Name, Description: "netvol volume (attach to get an export name)"})
	}
	return out, nil
}
