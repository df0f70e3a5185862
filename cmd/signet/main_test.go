package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"k8s.io/klog/v2"
)

// client-go logs through klog; with --log-format json those lines must be
// JSON too, or log pipelines choke on them.
func TestKlogGoesThroughTheLogger(t *testing.T) {
	var buf bytes.Buffer
	g := &globals{logFormat: "json", logLevel: "info"}
	if _, err := g.loggerTo(&buf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { klog.ClearLogger() })
	klog.ErrorS(nil, "Failed to watch", "reflector", "pods")
	klog.Flush()
	var line struct {
		Msg       string `json:"msg"`
		Level     string `json:"level"`
		Component string `json:"component"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line); err != nil {
		t.Fatalf("klog's line is not one JSON object: %v\n%s", err, buf.String())
	}
	if line.Msg != "Failed to watch" || line.Level != "ERROR" || line.Component != "client-go" {
		t.Errorf("klog's line = %+v", line)
	}
}
