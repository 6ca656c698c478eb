//! [`Prebuilt`]: a query whose SQL text is built once per thread, not on
//! every execution.
//!
//! diesel-async builds a query's SQL text each time it runs it, before
//! looking up the connection's prepared statement, which it finds by the
//! query's type: the text is then thrown away. For GET by id that was about
//! 6,000 instructions and 17 allocations per request (diesel quotes each
//! identifier into a new `String`), some 7% of the request (issue 14,
//! callgrind). A `Prebuilt` query hands diesel-async the text built the
//! first time its type ran on this thread.
//!
//! That is exactly as safe as the statement cache it feeds: the text is
//! reused only for a query type with a static query id whose statement may
//! be cached (`QueryId::HAS_STATIC_QUERY_ID` and
//! `is_safe_to_cache_prepared`), which is diesel's own condition for
//! running one prepared statement for every query of that type. Any other
//! query is built as before. Binds are always collected from the query
//! itself.

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use diesel::QueryResult;
use diesel::pg::{Pg, PgQueryBuilder};
use diesel::query_builder::{AstPass, Query, QueryBuilder, QueryFragment, QueryId};

thread_local! {
    /// The SQL text of each query type run through [`Prebuilt`] on this
    /// thread: a handful of types, found by a short scan.
    static TEXTS: RefCell<Vec<(TypeId, Rc<str>)>> = const { RefCell::new(Vec::new()) };
}

/// `query`, run with the SQL text its type had the first time it ran on
/// this thread (see the module docs). Wrap the whole query, as it is
/// passed to `load`, `get_result` or `execute`.
#[derive(Debug)]
pub struct Prebuilt<Q> {
    query: Q,
    /// `is_safe_to_cache_prepared`, which diesel-async asks before the
    /// text: kept so that building the text does not walk the query again.
    safe_to_cache: Cell<Option<bool>>,
}

impl<Q> Prebuilt<Q> {
    pub fn new(query: Q) -> Prebuilt<Q> {
        Prebuilt {
            query,
            safe_to_cache: Cell::new(None),
        }
    }
}

impl<Q: QueryId> QueryId for Prebuilt<Q> {
    type QueryId = Q::QueryId;
    const HAS_STATIC_QUERY_ID: bool = Q::HAS_STATIC_QUERY_ID;
}

impl<Q: Query> Query for Prebuilt<Q> {
    type SqlType = Q::SqlType;
}

impl<Q: QueryFragment<Pg> + QueryId> QueryFragment<Pg> for Prebuilt<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, backend: &Pg) -> QueryResult<bool> {
        if let Some(safe) = self.safe_to_cache.get() {
            return Ok(safe);
        }
        let safe = self.query.is_safe_to_cache_prepared(backend)?;
        self.safe_to_cache.set(Some(safe));
        Ok(safe)
    }

    fn to_sql(&self, out: &mut PgQueryBuilder, backend: &Pg) -> QueryResult<()> {
        let Some(type_id) = Q::query_id() else {
            return self.query.to_sql(out, backend);
        };
        if !self.is_safe_to_cache_prepared(backend)? {
            return self.query.to_sql(out, backend);
        }
        let known = TEXTS.with(|texts| {
            texts
                .borrow()
                .iter()
                .find(|(known, _)| *known == type_id)
                .map(|(_, text)| Rc::clone(text))
        });
        let text = match known {
            Some(text) => text,
            None => {
                let mut builder = PgQueryBuilder::default();
                self.query.to_sql(&mut builder, backend)?;
                let text: Rc<str> = builder.finish().into();
                TEXTS.with(|texts| texts.borrow_mut().push((type_id, Rc::clone(&text))));
                text
            }
        };
        out.push_sql(&text);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use uuid::Uuid;

    use super::*;
    use crate::schema::todos;

    /// `query`'s SQL text as diesel-async asks for it.
    fn text_of(query: &impl QueryFragment<Pg>) -> String {
        let mut builder = PgQueryBuilder::default();
        query.to_sql(&mut builder, &Pg).unwrap();
        builder.finish()
    }

    fn by_id_and_owner(id: Uuid, owner: &str) -> impl QueryFragment<Pg> + QueryId + '_ {
        todos::table
            .filter(todos::id.eq(id))
            .filter(todos::owner.eq(owner))
            .select(todos::title)
            .limit(1)
    }

    #[test]
    fn the_text_is_the_query_s_own_the_first_time_and_after() {
        let plain = text_of(&by_id_and_owner(Uuid::nil(), "alice"));

        let first = text_of(&Prebuilt::new(by_id_and_owner(Uuid::nil(), "alice")));
        let again = text_of(&Prebuilt::new(by_id_and_owner(Uuid::max(), "bob")));

        assert_eq!(first, plain);
        assert_eq!(again, plain);
        assert!(plain.contains("$1") && plain.contains("$3"), "{plain}");
    }

    #[test]
    fn each_query_type_keeps_its_own_text() {
        let by_id = text_of(&Prebuilt::new(by_id_and_owner(Uuid::nil(), "alice")));
        let delete = diesel::delete(todos::table.filter(todos::id.eq(Uuid::nil())));
        let plain_delete = text_of(&delete);

        let prebuilt_delete = text_of(&Prebuilt::new(delete));

        assert_eq!(prebuilt_delete, plain_delete);
        assert_ne!(prebuilt_delete, by_id);
    }

    #[test]
    fn a_query_whose_type_does_not_fix_its_text_is_built_every_time() {
        let boxed = |completed: Option<bool>| {
            let mut query = todos::table.select(todos::id).into_boxed();
            if let Some(completed) = completed {
                query = query.filter(todos::completed.eq(completed));
            }
            query
        };

        let unfiltered = text_of(&Prebuilt::new(boxed(None)));
        let filtered = text_of(&Prebuilt::new(boxed(Some(true))));

        assert_eq!(unfiltered, text_of(&boxed(None)));
        assert_eq!(filtered, text_of(&boxed(Some(true))));
        assert_ne!(unfiltered, filtered);
    }

    /// A query of one static type whose text depends on its value, and
    /// which says so (as diesel's variable-length fragments do).
    struct Varying(bool);

    impl QueryId for Varying {
        type QueryId = Varying;
        const HAS_STATIC_QUERY_ID: bool = true;
    }

    impl QueryFragment<Pg> for Varying {
        fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
            out.unsafe_to_cache_prepared();
            out.push_sql(if self.0 { "SELECT 1" } else { "SELECT 2" });
            Ok(())
        }
    }

    #[test]
    fn a_query_unsafe_to_cache_is_built_every_time_even_with_a_static_type() {
        assert_eq!(text_of(&Prebuilt::new(Varying(true))), "SELECT 1");
        assert_eq!(text_of(&Prebuilt::new(Varying(false))), "SELECT 2");
    }

    #[test]
    fn binds_come_from_the_query_itself() {
        let prebuilt = Prebuilt::new(by_id_and_owner(Uuid::nil(), "alice"));
        let _ = text_of(&prebuilt);

        let shown =
            diesel::debug_query::<Pg, _>(&Prebuilt::new(by_id_and_owner(Uuid::max(), "bob")))
                .to_string();

        assert!(shown.contains("\"bob\""), "{shown}");
        assert!(shown.contains(&Uuid::max().to_string()), "{shown}");
    }
}
