// Package report summarises totals; no test exercises it.
package report

// Summary is the count, sum, smallest and largest of the totals.
func Summary(totals []int) (count, sum, lowest, highest int) {
	if len(totals) == 0 {
		return 0, 0, 0, 0
	}
	lowest, highest = totals[0], totals[0]
	for _, t := range totals {
		if t < lowest {
			lowest = t
		}
		if t > highest {
			highest = t
		}
		sum += t
	}
	return len(totals), sum, lowest, highest
}

// Best is the largest total, or -1 without totals.
func Best(totals []int) int {
	if len(totals) == 0 {
		return -1
	}
	_, _, _, h := Summary(totals)
	return h
}
