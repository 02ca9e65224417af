package spec

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// SetArtifacts rewrites services.<name>.artifact in a YAML spec document for
// each name in ids, keeping the rest of the document (comments included),
// and returns the new document, validated. It is how `dcroll blob publish
// --spec` turns freshly published blobs into a spec ready to push.
func SetArtifacts(filename string, data []byte, ids map[string]string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(filename, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: not a spec document (a mapping with name and services)", filename)
	}
	services := mapValue(doc.Content[0], "services")
	if services == nil || services.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: no services mapping", filename)
	}
	names := make([]string, 0, len(ids))
	for n := range ids {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		svc := mapValue(services, name)
		if svc == nil || svc.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s: services.%s: unknown service (known: %s)", filename, name, strings.Join(mapKeys(services), ", "))
		}
		art := mapValue(svc, "artifact")
		if art == nil {
			svc.Content = append(svc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "artifact"}, &yaml.Node{Kind: yaml.ScalarNode, Value: ids[name]})
			continue
		}
		art.Kind, art.Tag, art.Value, art.Style = yaml.ScalarNode, "!!str", ids[name], 0
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("%s: %w", filename, err)
	}
	if _, err := Parse(filename, out.Bytes()); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapKeys(m *yaml.Node) []string {
	var keys []string
	for i := 0; i+1 < len(m.Content); i += 2 {
		keys = append(keys, m.Content[i].Value)
	}
	return keys
}
