package kubetest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/scheme"
)

// watch streams a collection's changes as the API server does: WatchEvent
// frames (length-prefixed protobuf, or JSON objects) in the negotiated
// format, one per change after the given resourceVersion. With
// sendInitialEvents=true (client-go's watch-list, on by default) the stream
// starts with the current objects as ADDED events and a BOOKMARK marked
// k8s.io/initial-events-end; a legacy watch from resourceVersion "" or "0"
// starts with the ADDED events only.
func (a *APIServer) watch(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	watchList := q.Get("sendInitialEvents") == "true"
	if watchList && q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) {
		writeStatus(w, r, http.StatusUnprocessableEntity, metav1.StatusReasonInvalid, "resourceVersionMatch: sendInitialEvents requires NotOlderThan")
		return
	}
	var since int64
	if v := q.Get("resourceVersion"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			writeStatus(w, r, http.StatusBadRequest, metav1.StatusReasonBadRequest, fmt.Sprintf("invalid resourceVersion %q", v))
			return
		}
		since = n
	}
	var timeout <-chan time.Time
	if v := q.Get("timeoutSeconds"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			timer := time.NewTimer(time.Duration(n) * time.Second)
			defer timer.Stop()
			timeout = timer.C
		}
	}
	enc, err := newWatchEncoder(w, r, req.res)
	if err != nil {
		writeStatus(w, r, http.StatusNotAcceptable, metav1.StatusReasonNotAcceptable, err.Error())
		return
	}

	a.mu.Lock()
	var initial []map[string]any
	if watchList || since == 0 {
		initial = a.snapshotLocked(req)
		since = a.rv
	}
	a.mu.Unlock()
	w.WriteHeader(http.StatusOK)
	for _, obj := range initial {
		if enc.encode(watch.Added, obj) != nil {
			return
		}
	}
	if watchList {
		bookmark := map[string]any{"apiVersion": req.res.gv.String(), "kind": req.res.kind, "metadata": map[string]any{
			"resourceVersion": strconv.FormatInt(since, 10),
			"annotations":     map[string]any{metav1.InitialEventsAnnotationKey: "true"},
		}}
		if enc.encode(watch.Bookmark, bookmark) != nil {
			return
		}
	}
	enc.flush()
	for {
		a.mu.Lock()
		var pending []event
		for _, e := range a.events {
			if e.rv > since && e.res == req.res && (req.allNamespaces || namespaceOf(e.obj) == req.namespace) {
				pending = append(pending, e)
			}
		}
		if n := len(a.events); n > 0 {
			since = max(since, a.events[n-1].rv)
		}
		changed := a.changed
		a.mu.Unlock()
		for _, e := range pending {
			if enc.encode(e.typ, e.obj) != nil {
				return
			}
		}
		enc.flush()
		select {
		case <-changed:
		case <-r.Context().Done():
			return
		case <-a.done:
			return
		case <-timeout:
			return
		}
	}
}

func namespaceOf(obj map[string]any) string {
	md, _ := obj["metadata"].(map[string]any)
	ns, _ := md["namespace"].(string)
	return ns
}

// watchEncoder writes watch events in one format.
type watchEncoder struct {
	w      http.ResponseWriter
	encode func(typ watch.EventType, obj map[string]any) error
}

func (e *watchEncoder) flush() {
	if f, ok := e.w.(http.Flusher); ok {
		f.Flush()
	}
}

// newWatchEncoder picks the format as the API server does: built-in kinds
// in protobuf when the client accepts it, else JSON; each event is a
// metav1.WatchEvent whose object is encoded on its own, then framed.
func newWatchEncoder(w http.ResponseWriter, r *http.Request, res *resource) (*watchEncoder, error) {
	enc := &watchEncoder{w: w}
	if !res.builtin {
		w.Header().Set("Content-Type", runtime.ContentTypeJSON)
		jenc := json.NewEncoder(w)
		enc.encode = func(typ watch.EventType, obj map[string]any) error {
			return jenc.Encode(map[string]any{"type": string(typ), "object": obj})
		}
		return enc, nil
	}
	info, ok := negotiate(r)
	if !ok || info.StreamSerializer == nil {
		return nil, fmt.Errorf("no streaming serializer for %q", r.Header.Get("Accept"))
	}
	contentType := info.MediaType
	if info.MediaType == runtime.ContentTypeProtobuf {
		contentType += ";stream=watch"
	}
	w.Header().Set("Content-Type", contentType)
	embedded := scheme.Codecs.EncoderForVersion(info.Serializer, res.gv)
	outer := scheme.Codecs.EncoderForVersion(info.StreamSerializer.Serializer, res.gv)
	var frames io.Writer = info.StreamSerializer.Framer.NewFrameWriter(w)
	enc.encode = func(typ watch.EventType, u map[string]any) error {
		obj, err := typed(res, u)
		if err != nil {
			return err
		}
		raw, err := runtime.Encode(embedded, obj)
		if err != nil {
			return err
		}
		return outer.Encode(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}}, frames)
	}
	return enc, nil
}

// negotiate picks the first serializer the client's Accept header names
// (client-go asks for protobuf, then JSON), JSON when it names none.
func negotiate(r *http.Request) (runtime.SerializerInfo, bool) {
	for _, accept := range strings.Split(r.Header.Get("Accept"), ",") {
		mediaType, _, _ := strings.Cut(strings.TrimSpace(accept), ";")
		if info, found := runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), mediaType); found {
			return info, true
		}
	}
	return runtime.SerializerInfoForMediaType(scheme.Codecs.SupportedMediaTypes(), runtime.ContentTypeJSON)
}
