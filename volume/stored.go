package volume

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/netvol/netvol/state"
	"github.com/netvol/netvol/volume/backend"
)

// A volume's options travel with it (backend.Options.Stored): a host that
// did not create a volume takes its owner, mode and mount options from what
// the volume stored, not from its own defaults.

// applyStored puts the options stored with v (backend.Volume.Stored) in
// place of those v has here. They come from the storage, so they pass the
// checks Docker's options pass before they are taken, and only
// backend.StoredKeys are. nil (a volume that stored none) leaves v as it
// is. changed says whether v's options changed.
func (d *Driver) applyStored(v *state.NodeVolume, stored map[string]string) (changed bool, err error) {
	if stored == nil {
		return false, nil
	}
	raw := map[string]string{"type": v.Type}
	for k, val := range v.Options {
		if !slices.Contains(backend.StoredKeys, k) {
			raw[k] = val
		}
	}
	for k, val := range stored {
		if !slices.Contains(backend.StoredKeys, k) {
			return false, fmt.Errorf("the volume stored option %q, which is not one a volume keeps (%s): %w",
				k, strings.Join(backend.StoredKeys, ", "), backend.ErrInvalid)
		}
		raw[k] = val
	}
	if _, _, err := d.parse(raw); err != nil {
		return false, fmt.Errorf("the options stored with the volume: %w", err)
	}
	if maps.Equal(raw, v.Options) {
		return false, nil
	}
	v.Options = raw
	return true, nil
}

// refresh reads the options stored with v from its backend before v is
// mounted or removed here, records them, and parses v's options again. A
// volume its backend no longer has keeps the options it has here.
func (d *Driver) refresh(ctx context.Context, v state.NodeVolume, kind Kind, p Parsed) (state.NodeVolume, Parsed, error) {
	bv, err := kind.Backend.Get(ctx, v.Name, p.Options)
	if errors.Is(err, backend.ErrNotFound) {
		return v, p, nil
	}
	if err != nil {
		return v, p, err
	}
	moved := located(&v, &p, bv)
	changed, err := d.applyStored(&v, bv.Stored)
	if err != nil || !changed && !moved {
		return v, p, err
	}
	if err := d.cfg.Store.PutVolume(v); err != nil {
		return v, p, err
	}
	p, _, err = d.parse(v.Options)
	p.Options.Location = v.Server
	return v, p, err
}
