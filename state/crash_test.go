package state

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestCrashLeavesOldOrNew kills a writer process in the middle of its
// stream of 1,000-volume batches and checks that the database holds one
// whole batch: never a mix of two.
func TestCrashLeavesOldOrNew(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	path := filepath.Join(t.TempDir(), "node.db")
	for round := range 4 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriter$")
		cmd.Env = append(os.Environ(), "NETVOL_STATE_CRASH_DB="+path)
		out, err := cmd.StdoutPipe()
		must(t, err)
		must(t, cmd.Start())
		t.Cleanup(func() { _ = cmd.Process.Kill() }) // never leave a writer behind
		// Wait for the writer's first commit, then kill it mid-stream.
		if _, err := bufio.NewReader(out).ReadString('\n'); err != nil {
			t.Fatalf("writer: %v", err)
		}
		time.Sleep(time.Duration(3+7*round) * time.Millisecond)
		must(t, cmd.Process.Kill())
		_ = cmd.Wait()
		checkOneBatch(t, path)
	}
}

func checkOneBatch(t *testing.T, path string) {
	t.Helper()
	n, err := OpenNodeStore(path)
	must(t, err)
	defer n.Close()
	vs, err := n.ListVolumes()
	must(t, err)
	if len(vs) != 0 && len(vs) != 1000 {
		t.Fatalf("%d volumes after crash, want 0 or 1000", len(vs))
	}
	if len(vs) > 0 {
		t.Logf("after kill: %d volumes of batch %s", len(vs), vs[0].Status["batch"])
	}
	for _, v := range vs {
		if v.Status["batch"] != vs[0].Status["batch"] {
			t.Fatalf("volume %s from batch %s beside batch %s", v.Name, v.Status["batch"], vs[0].Status["batch"])
		}
	}
}

// TestCrashWriter is the writer process of TestCrashLeavesOldOrNew.
func TestCrashWriter(t *testing.T) {
	path := os.Getenv("NETVOL_STATE_CRASH_DB")
	if path == "" {
		t.Skip("helper process of TestCrashLeavesOldOrNew")
	}
	n, err := OpenNodeStore(path, WithTimeout(5*time.Second))
	must(t, err)
	vs := cacheVolumes(1000)
	for batch := time.Now().UnixNano(); ; batch++ {
		for i := range vs {
			vs[i].Status = map[string]string{"batch": strconv.FormatInt(batch, 10)}
		}
		must(t, n.PutVolumes(vs))
		fmt.Println("committed", batch)
	}
}

func TestCorruptValueNamesTheVolume(t *testing.T) {
	n := openNode(t)
	must(t, n.CreateVolume(NodeVolume{Name: "ok"}))
	must(t, n.s.update(func(root *bolt.Bucket) error {
		return root.Bucket(keyVolumes).Put([]byte("bad"), []byte("{not json"))
	}))
	_, err := n.ListVolumes()
	if err == nil || !strings.Contains(err.Error(), `volume "bad"`) {
		t.Fatalf("error %v does not name the volume", err)
	}
	_, err = n.GetVolume("bad")
	if err == nil {
		t.Fatal("corrupt value decoded")
	}
	if n.Path() == "" {
		t.Fatal("no path")
	}
}
