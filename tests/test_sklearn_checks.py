"""scikit-learn's own estimator checks, on a small fast configuration."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from contractive import ContractiveAutoencoder, FineTunedClassifier, StackedContractiveAutoencoder

# Expected failures, each with its reason (none so far).
EXPECTED_FAILED: dict[str, str] = {}


def _expected_failed_checks(estimator):
    return EXPECTED_FAILED


@parametrize_with_checks(
    [
        ContractiveAutoencoder(n_components=2, max_epochs=3, batch_size=16, random_state=0),
        FineTunedClassifier(hidden_layer_sizes=(16,), max_epochs=30, learning_rate=0.3,
                            random_state=0),
        StackedContractiveAutoencoder((4, 2), base=ContractiveAutoencoder(max_epochs=2),
                                      random_state=0),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
