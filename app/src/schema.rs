// @generated automatically by Diesel CLI.

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        #[max_length = 255]
        owner -> Varchar,
        secret_hash -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    todos (id) {
        id -> Uuid,
        #[max_length = 255]
        title -> Varchar,
        description -> Nullable<Text>,
        completed -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        #[max_length = 255]
        owner -> Varchar,
    }
}

diesel::allow_tables_to_appear_in_same_query!(api_keys, todos,);
