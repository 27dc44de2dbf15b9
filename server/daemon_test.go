package server

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	tok, err := LoadToken(path)
	if err != nil || len(tok) != 43 {
		t.Fatalf("new token %q, %v", tok, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode: %v %v", st.Mode(), err)
	}
	if again, err := LoadToken(path); err != nil || again != tok {
		t.Fatalf("reread %q, %v; want %q", again, err, tok)
	}
	os.WriteFile(path, []byte(" \n"), 0o600)
	if _, err := LoadToken(path); err == nil {
		t.Fatal("an empty token file was accepted")
	}
}
