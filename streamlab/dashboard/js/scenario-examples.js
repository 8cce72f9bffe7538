// Example scenarios offered by the Scenarios page (docs/scenarios.md describes the format).
// Each one is a starting point to edit: the page validates it against the server's schema.

export const EXAMPLES = [
  {
    label: "Rate drop and recovery (60 s)",
    scenario: {
      name: "rate-drop-recovery",
      seed: 42,
      duration: 60,
      steps: [
        { id: "drop", at: 10, for: 20, set: { nftables_bandwidth_mbps: 1.5 } },
        { id: "lossy", after: "drop", for: 10, set: { nftables_packet_loss: 2 } },
      ],
      expect: [
        { metric: "stalls", op: "<=", value: 1 },
        { kind: "switch_down_within", after_step: "drop", seconds: 10 },
      ],
    },
  },
  {
    label: "Lose the top rung, then random 404s (50 s)",
    scenario: {
      name: "top-rung-then-404s",
      seed: 7,
      duration: 50,
      steps: [
        { id: "no-top", at: 5, for: 20, set: { manifest_fault_type: "variant_removed" } },
        {
          id: "random-404", at: 30, for: 15,
          set: { segment_failure_type: "404", segment_failure_probability: 0.2 },
        },
      ],
      expect: [
        { metric: "stalls", op: "<=", value: 2 },
      ],
    },
  },
  {
    label: "Stale playlist (40 s)",
    scenario: {
      name: "stale-playlist",
      duration: 40,
      steps: [
        { id: "stale", at: 10, for: 15, set: { manifest_fault_type: "stale_playlist", manifest_fault_value: 8 } },
      ],
      expect: [
        { metric: "stalls", op: "<=", value: 2 },
      ],
    },
  },
  {
    label: "A one-shot 503 every 10 s (45 s)",
    scenario: {
      name: "repeated-503",
      duration: 45,
      steps: [
        {
          id: "blip", at: 5, repeat: { every: 10, times: 4 },
          set: { segment_failure_type: "503", segment_consecutive_failures: 1, segment_failure_frequency: 0 },
        },
      ],
      expect: [
        { metric: "stalls", op: "<=", value: 0 },
      ],
    },
  },
];
