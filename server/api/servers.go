package api

import (
	"fmt"
	"strings"
)

// MaxServers bounds a pool: more members than this is a mistake, not a
// pool (each list and create asks every one).
const MaxServers = 64

// ParseServers splits a --server list, "a:10810,b:10810,https://c:10810",
// into its members' base URLs, checked as New checks one. Blanks around
// commas are ignored; an empty member, one given twice (by host:port) or
// more than MaxServers are refused with ErrInvalid.
func ParseServers(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("no storage server: want host:port[,host:port...]: %w", ErrInvalid)
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxServers {
		return nil, fmt.Errorf("%d storage servers: at most %d: %w", len(parts), MaxServers, ErrInvalid)
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("storage server list %q: entry %d is empty: %w", s, i+1, ErrInvalid)
		}
		u, err := parseBase(p)
		if err != nil {
			return nil, err
		}
		if seen[u.Host] {
			return nil, fmt.Errorf("storage server %s is given twice: %w", u.Host, ErrInvalid)
		}
		seen[u.Host] = true
		out = append(out, p)
	}
	return out, nil
}

// SplitList splits a comma-separated list of tokens or token files, as
// --token and --token-file take them for a pool: one for every server, or
// one for all. Blanks around commas are ignored.
func SplitList(s string) []string {
	if s == "" {
		return nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}
