/**
 * The names of the traffic classes: the vocabulary that config, the CLI and
 * the API share with the classifier (src/qos/classes.ts). A leaf module, so
 * that config and the CLI can name classes without importing the data path.
 */

/** Class names, highest first; the index is the class id. */
export const QOS_CLASSES = ['latency', 'interactive', 'best-effort', 'bulk'] as const;
