package fuseattach

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/netvol/netvol/nbd"
)

// Dialer returns the DialFunc of an export at addr (host:port, or
// unix:/path). The export name is a credential: errors name the server
// only.
func Dialer(addr, export string) DialFunc {
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
	}
	return func(ctx context.Context) (*nbd.Client, error) {
		// nbd.Dial turns Nagle's delay off: requests are small and
		// latency-bound. Go's dialer enables TCP keep-alives.
		c, err := nbd.Dial(ctx, network, address, nbd.ClientOptions{ExportName: export})
		if err != nil {
			var oe *nbd.OptionError
			if errors.As(err, &oe) {
				// The server's message may quote the name: keep its kind only.
				return nil, fmt.Errorf("NBD server %s refused the export (%s): the attachment is gone or was taken over", addr, oe.Reply)
			}
			return nil, fmt.Errorf("NBD server %s: %s", addr, strings.ReplaceAll(err.Error(), export, "<export>"))
		}
		if c.Info().Flags&nbd.FlagReadOnly != 0 {
			c.Close()
			return nil, fmt.Errorf("NBD server %s serves the export read-only", addr)
		}
		return c, nil
	}
}
