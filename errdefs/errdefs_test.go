package errdefs

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestKindsMatchThroughWrapping(t *testing.T) {
	held := fmt.Errorf("attach: %w", &HeldError{Volume: "v", Holder: "n1", Mode: "rw", Expires: time.Unix(0, 0)})
	if !errors.Is(held, ErrHeld) || !errors.Is(held, ErrInUse) || errors.Is(held, ErrNotFound) {
		t.Fatalf("held error kinds wrong: %v", held)
	}
	if !strings.Contains(held.Error(), `attached read-write by node "n1"`) {
		t.Fatalf("held text %q", held)
	}
	inUse := fmt.Errorf("delete: %w", &InUseError{Volume: "v", Nodes: []string{"a"}, Children: []string{"c1", "c2"}})
	if !errors.Is(inUse, ErrInUse) || errors.Is(inUse, ErrHeld) {
		t.Fatalf("in-use error kinds wrong: %v", inUse)
	}
	if want := `volume "v" is in use: attached by node "a"; parent of "c1", "c2"`; !strings.Contains(inUse.Error(), want) {
		t.Fatalf("in-use text %q, want %q", inUse, want)
	}
	var e *InUseError
	if !errors.As(inUse, &e) || len(e.Children) != 2 {
		t.Fatal("errors.As lost the details")
	}
}
