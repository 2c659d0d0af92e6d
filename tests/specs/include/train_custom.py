"""Training entrypoint used by the good test specs (never imported at lint or parse time)."""


def train(X_train, y_train, params):
    from sklearn.linear_model import Ridge

    return Ridge(**params).fit(X_train, y_train)
