"""The voucher programme: eligibility, weights, the allocation pipeline and payouts."""
