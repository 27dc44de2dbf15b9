package opcmd

import (
	"fmt"
	"os"
	"strings"

	"github.com/netvol/netvol/server/api"
)

// Servers is the storage servers of Server: one, or a pool
// ("a:10810,b:10810").
func (c Conn) Servers() ([]string, error) {
	s, err := api.ParseServers(c.Server)
	if err != nil {
		return nil, fmt.Errorf("--server (NETVOL_SERVER): %w", err)
	}
	return s, nil
}

// APIClients is a client of every server of Server, each with its token:
// Token or TokenFile give one token (or file) for every server, or a
// comma-separated list with one per server, in --server's order.
func (c Conn) APIClients() ([]*api.Client, error) {
	servers, err := c.Servers()
	if err != nil {
		return nil, err
	}
	tokens, err := c.apiTokens(servers)
	if err != nil {
		return nil, err
	}
	out := make([]*api.Client, len(servers))
	for i, s := range servers {
		if out[i], err = api.New(s, tokens[i], nil); err != nil {
			return nil, fmt.Errorf("--server (NETVOL_SERVER): %w", err)
		}
	}
	return out, nil
}

// apiTokens is the token of each server.
func (c Conn) apiTokens(servers []string) ([]string, error) {
	if len(servers) == 1 {
		tok, err := c.APIToken()
		return []string{tok}, err
	}
	list, what := api.SplitList(c.Token), "--token (NETVOL_TOKEN)"
	if c.Token == "" {
		list, what = api.SplitList(c.TokenFile), "--token-file (NETVOL_TOKEN_FILE)"
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("no API token for the storage servers %s: give --token-file (NETVOL_TOKEN_FILE): one file for all, or one per server separated by commas", c.Server)
	case 1, len(servers):
	default:
		return nil, fmt.Errorf("%s lists %d tokens for %d storage servers: give one for all, or one per server in --server's order", what, len(list), len(servers))
	}
	out := make([]string, len(servers))
	for i := range servers {
		v := list[min(i, len(list)-1)]
		if c.Token == "" {
			data, err := os.ReadFile(v)
			if err != nil {
				return nil, fmt.Errorf("reading the API token of %s (%s): %w", servers[i], what, err)
			}
			if v = strings.TrimSpace(string(data)); v == "" {
				return nil, fmt.Errorf("the token file of %s (%s) is empty", servers[i], what)
			}
		}
		out[i] = v
	}
	return out, nil
}
