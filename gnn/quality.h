// Fraud-detection quality from scores (probability of class 1) and 0/1 labels. Conventions:
// a node is flagged when score >= threshold; the PR curve has one point per distinct score
// (highest first) plus (recall 0, precision 1), and PR-AUC integrates it by trapezoids over
// recall (as sklearn's auc(recall, precision)); ROC-AUC is the Mann-Whitney statistic with
// ties counted half; "top q" is the ceil(q n) highest scores, ties broken by node order.
#pragma once
#include <cstdint>
#include <vector>

namespace knlp {

struct Quality {
	int64_t nodes = 0, positives = 0;
	double threshold = 0, f1 = 0, precision = 0, recall = 0;
	double pr_auc = 0, roc_auc = 0, precision_at_05pct = 0, recall_at_1pct = 0;
};

// The threshold with the highest F1 (the first, highest one among ties), and that F1.
double best_f1_threshold(const std::vector<float> &scores, const std::vector<int64_t> &labels, double *f1);
// Every figure, F1/precision/recall at `threshold`.
Quality score_quality(const std::vector<float> &scores, const std::vector<int64_t> &labels, double threshold);

} // namespace knlp
